"""clarify-env: when to ask, when to enumerate, when to just answer — at a price."""

from gymnasium.envs.registration import register, registry

from clarify_env.costs import COST_SPLITS, Costs, make_cost_sampler
from clarify_env.dialogue import UserRequest
from clarify_env.env import ClarifyEnv, render_observation
from clarify_env.protocol import Action, Move, ProtocolError, format_action, parse_action
from clarify_env.scoring import RewardComponents, Rules, score
from clarify_env.tasks import Interpretation, Task, TaskError

ENV_ID = "clarify_env/Clarify-v0"
if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="clarify_env.env:ClarifyEnv")


def load_environment(**kwargs):
    """The environment for verifiers (``vf.load_environment("clarify-env", ...)`` calls this):
    ``clarify_env.integrations.verifiers_env.load_environment``."""
    from clarify_env.integrations.verifiers_env import load_environment as load

    return load(**kwargs)


__all__ = [
    "COST_SPLITS",
    "ENV_ID",
    "Action",
    "ClarifyEnv",
    "Costs",
    "Interpretation",
    "Move",
    "ProtocolError",
    "RewardComponents",
    "Rules",
    "Task",
    "TaskError",
    "UserRequest",
    "format_action",
    "make_cost_sampler",
    "load_environment",
    "parse_action",
    "render_observation",
    "score",
]
