"""clarify-env: when to ask, when to enumerate, when to just answer — at a price."""

from gymnasium.envs.registration import register, registry

from clarify_env.costs import COST_SPLITS, Costs, make_cost_sampler
from clarify_env.dialogue import UserRequest
from clarify_env.env import ClarifyEnv
from clarify_env.protocol import Action, Move, ProtocolError, format_action, parse_action
from clarify_env.reward import RewardComponents, compute_reward
from clarify_env.tasks import Interpretation, Task, TaskError

ENV_ID = "clarify_env/Clarify-v0"
if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="clarify_env.env:ClarifyEnv")

__all__ = [
    "COST_SPLITS", "ENV_ID", "Action", "ClarifyEnv", "Costs", "Interpretation", "Move", "ProtocolError",
    "RewardComponents", "Task", "TaskError", "UserRequest", "compute_reward", "format_action",
    "make_cost_sampler", "parse_action",
]
