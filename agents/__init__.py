"""Agents that play the assistant or the user in a clarify-env dialogue."""

from agents.base import Agent
from agents.baselines import AlwaysAnswer, AlwaysClarify, AlwaysMulti, RandomMixture, make_baseline
from agents.oracle_policy import OraclePolicy
from agents.scripted_user import ScriptedUser

__all__ = [
    "Agent", "AlwaysAnswer", "AlwaysClarify", "AlwaysMulti", "OraclePolicy", "RandomMixture",
    "ScriptedUser", "make_baseline",
]
