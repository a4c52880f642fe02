"""Scripted assistant policies that read the open-book context: the fixed baselines and the oracle.

They see exactly what an LLM assistant sees (the observation). The baselines ignore the
prices, which is what makes them baselines; the oracle plays the Bayes-optimal move at them.
After a clarifying question they all answer the meaning the user's reply points at (the
most likely one if it points at none).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from agents.base import Assistant
from clarify_env.costs import Costs
from clarify_env.matching import best_match
from clarify_env.oracle import best, clarifying_question, context_meanings, guess_index, move_values
from clarify_env.protocol import MOVES, Move, answer, clarify, multi
from clarify_env.scoring import Meaning, Rules

NO_CONTEXT_ANSWER = answer("unknown")


class ContextPolicy(Assistant):
    """Base for scripted assistants: parses meanings, prices and the user's reply."""

    @staticmethod
    def meanings(observation: Mapping[str, Any]) -> list[Meaning]:
        return context_meanings(observation["context"])

    @staticmethod
    def costs(observation: Mapping[str, Any]) -> Costs:
        return Costs.from_array(observation["costs"])

    @staticmethod
    def clarified(observation: Mapping[str, Any]) -> bool:
        return observation["questions_asked"] > 0

    @staticmethod
    def answer_after_clarification(observation: Mapping[str, Any], meanings: Sequence[Meaning]) -> str:
        reply = observation["messages"][-1]["content"]
        chosen = best_match(reply, [m.facet for m in meanings], observation["query"])
        return answer(meanings[guess_index(meanings) if chosen is None else chosen].answer)

    def act(self, observation: Mapping[str, Any]) -> str:
        meanings = self.meanings(observation)
        if not meanings:
            return NO_CONTEXT_ANSWER
        if self.clarified(observation):
            return self.answer_after_clarification(observation, meanings)
        return self.first_move(observation, meanings)

    def first_move(self, observation: Mapping[str, Any], meanings: Sequence[Meaning]) -> str:
        raise NotImplementedError


def _message(move: Move, meanings: Sequence[Meaning]) -> str:
    if move is Move.ANSWER:
        return answer(meanings[guess_index(meanings)].answer)
    if move is Move.MULTI:
        return multi([(m.facet, m.answer) for m in meanings])
    return clarify(clarifying_question([m.facet for m in meanings]))


class AlwaysAnswer(ContextPolicy):
    """Answers the most likely meaning."""

    name = "always_answer"

    def first_move(self, observation, meanings):
        return _message(Move.ANSWER, meanings)


class AlwaysMulti(ContextPolicy):
    """Enumerates every meaning with its answer."""

    name = "always_multi"

    def first_move(self, observation, meanings):
        return _message(Move.MULTI, meanings)


class AlwaysClarify(ContextPolicy):
    """Asks which meaning, then answers it."""

    name = "always_clarify"

    def first_move(self, observation, meanings):
        return _message(Move.CLARIFY, meanings)


class RandomMixture(ContextPolicy):
    """Picks its first move at random with fixed probabilities, blind to the prices."""

    name = "random_mixture"

    def __init__(self, weights: Mapping[str, float] | None = None, seed: int = 0) -> None:
        weights = dict(weights or {m.value: 1.0 for m in MOVES})
        unknown = set(weights) - {m.value for m in MOVES}
        if unknown or not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"weights must map ANSWER/MULTI/CLARIFY to non-negative numbers, got {weights}")
        self.moves = [Move(k) for k in weights]
        total = sum(weights.values())
        self.probs = np.array([weights[m.value] / total for m in self.moves])
        self.rng = np.random.default_rng(seed)

    def first_move(self, observation, meanings):
        return _message(self.moves[int(self.rng.choice(len(self.moves), p=self.probs))], meanings)


class OraclePolicy(ContextPolicy):
    """Computes every move's expected reward at the observed prices, under ``rules``, and plays the best."""

    name = "oracle"

    def __init__(self, rules: Rules = Rules()) -> None:
        self.rules = rules

    def first_move(self, observation, meanings):
        return best(move_values(meanings, self.costs(observation), observation["query"], self.rules)).message


BASELINES = {cls.name: cls for cls in (AlwaysAnswer, AlwaysMulti, AlwaysClarify, RandomMixture)}
SCRIPTED_POLICIES = ("oracle", *BASELINES)


def make_baseline(name: str, rules: Rules = Rules(), **kwargs: Any) -> ContextPolicy:
    """A scripted policy by name: ``oracle`` (playing under ``rules``) or a fixed baseline
    (always_answer, always_multi, always_clarify, random_mixture)."""
    if name == "oracle":
        return OraclePolicy(rules)
    if name not in BASELINES:
        raise ValueError(f"unknown scripted policy {name!r}; known: {', '.join(SCRIPTED_POLICIES)}")
    return BASELINES[name](**kwargs)
