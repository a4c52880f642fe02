"""Agents that play the assistant or the user in a clarify-env dialogue."""

from agents.base import Agent, Assistant, UserReply, UserSimulator, as_assistant, as_user
from agents.baselines import AlwaysAnswer, AlwaysClarify, AlwaysMulti, OraclePolicy, RandomMixture, make_baseline
from agents.scripted_user import ScriptedUser

__clarify_env__ = True  # this `agents` is clarify-env's (openai-agents owns the same top-level name)

__all__ = [
    "Agent",
    "AlwaysAnswer",
    "AlwaysClarify",
    "AlwaysMulti",
    "Assistant",
    "OraclePolicy",
    "RandomMixture",
    "ScriptedUser",
    "UserReply",
    "UserSimulator",
    "as_assistant",
    "as_user",
    "make_baseline",
]
