"""The oracle assistant: plays the Bayes-optimal move from the visible context and prices."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from clarify_env.oracle import Meaning, best, move_values

from agents.baselines import ContextPolicy


class OraclePolicy(ContextPolicy):
    """Computes every move's expected reward at the observed prices and plays the best."""

    name = "oracle"

    def __init__(self, max_questions: int = 1) -> None:
        self.max_questions = max_questions

    def first_move(self, observation: Mapping[str, Any], meanings: Sequence[Meaning]) -> str:
        values = move_values(meanings, self.costs(observation), observation["query"], self.max_questions)
        return best(values).message
