"""Agents that play the assistant or the user in a clarify-env dialogue."""

from agents.base import Agent, Assistant, UserReply, UserSimulator, as_assistant, as_user
from agents.baselines import AlwaysAnswer, AlwaysClarify, AlwaysMulti, OraclePolicy, RandomMixture, make_baseline
from agents.scripted_user import ScriptedUser

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
