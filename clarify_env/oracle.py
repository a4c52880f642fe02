"""The Bayes-optimal move for a task at given prices.

With meanings of prior p_i: a guess of meaning j earns sum_i p_i acc(answer_j, gold_i);
an enumeration earns ~1 but pays for every item's words; a clarification earns ~1 but
pays alpha. ``move_values`` computes each move's expected reward exactly under the
env's reward and the scripted user (who answers an on-topic question with its facet and
takes its own item from an enumeration); ``best`` picks the maximum.

Meanings come from the task itself (``task_meanings``: the ceiling) or from the
assistant's visible context (``context_meanings``: what a policy can act on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from clarify_env.context import parse_context
from clarify_env.costs import Costs
from clarify_env.matching import best_match, pick_item
from clarify_env.protocol import MOVES, Move, answer, clarify, multi
from clarify_env.reward import best_em, best_f1, count_words
from clarify_env.tasks import Task


@dataclass(frozen=True)
class Meaning:
    """One interpretation as a policy reasons about it."""

    facet: str
    answer: str
    prior: float
    golds: tuple[str, ...]


@dataclass(frozen=True)
class MoveValue:
    """A move, the message that plays it, and its expected reward and parts."""

    move: Move
    message: str
    expected_reward: float
    expected_accuracy: float
    expected_words: float
    questions: int


def likeliest_first(meanings: Sequence[Meaning]) -> list[Meaning]:
    """Meanings by prior, highest first (ties keep their order): the order every scripted
    policy names them in, and the order of the compact prompt's lines, so that an
    enumeration or a clarifying question is a copy of the prompt's lines in turn."""
    return sorted(meanings, key=lambda m: -m.prior)


def task_meanings(task: Task) -> list[Meaning]:
    """The task's own meanings (with every gold alias), likeliest first."""
    return likeliest_first(
        [Meaning(i.facet, i.answer, p, i.answers) for i, p in zip(task.interpretations, task.priors)]
    )


def context_meanings(context: str | None) -> list[Meaning]:
    """The meanings an assistant can read from the open-book context, likeliest first."""
    entries = parse_context(context)
    total = sum(e.share for e in entries) or 1.0
    return likeliest_first([Meaning(e.facet, e.answer, e.share / total, (e.answer,)) for e in entries])


def clarifying_question(facets: Sequence[str]) -> str:
    """An on-topic question naming every facet."""
    if len(facets) == 1:
        return f"Do you mean {facets[0]}?"
    return f"Do you mean {', '.join(facets[:-1])} or {facets[-1]}?"


def _accuracy(prediction: str, golds: Sequence[str], metric: str) -> float:
    return best_f1(prediction, golds) if metric == "f1" else best_em(prediction, golds)


def guess_index(meanings: Sequence[Meaning]) -> int:
    """The most likely meaning (first on ties)."""
    return max(range(len(meanings)), key=lambda i: (meanings[i].prior, -i))


def move_values(
    meanings: Sequence[Meaning], costs: Costs, query: str = "", max_questions: int = 1, metric: str = "f1"
) -> dict[Move, MoveValue]:
    """Expected reward of the best message for each move (CLARIFY only if allowed)."""
    if not meanings:
        raise ValueError("no meanings to reason about (closed-book task?)")
    facets = [m.facet for m in meanings]
    values: dict[Move, MoveValue] = {}

    guesses = []
    for j, mj in enumerate(meanings):
        acc = sum(mi.prior * _accuracy(mj.answer, mi.golds, metric) for mi in meanings)
        words = count_words(mj.answer)
        guesses.append((acc - costs.word * words, -j, acc, words, mj.answer))
    reward, _, acc, words, text = max(guesses)
    values[Move.ANSWER] = MoveValue(Move.ANSWER, answer(text), reward, acc, words, 0)

    message = multi([(m.facet, m.answer) for m in meanings])
    words = count_words(message.partition(":")[2])
    acc = sum(
        mi.prior * _accuracy(meanings[pick_item(facets, facets, i, query)].answer, mi.golds, metric)
        for i, mi in enumerate(meanings)
    )
    values[Move.MULTI] = MoveValue(Move.MULTI, message, acc - costs.word * words, acc, words, 0)

    if max_questions >= 1:
        fallback = guess_index(meanings)
        acc = words = 0.0
        for i, mi in enumerate(meanings):
            chosen = best_match(mi.facet, facets, query)
            picked = meanings[fallback if chosen is None else chosen].answer
            acc += mi.prior * _accuracy(picked, mi.golds, metric)
            words += mi.prior * count_words(picked)
        reward = acc - costs.question - costs.word * words
        values[Move.CLARIFY] = MoveValue(Move.CLARIFY, clarify(clarifying_question(facets)), reward, acc, words, 1)
    return values


def best(values: dict[Move, MoveValue]) -> MoveValue:
    """The highest expected reward; ties go to ANSWER, then MULTI, then CLARIFY."""
    return max((values[m] for m in MOVES if m in values), key=lambda v: v.expected_reward)


TIE = 1e-9  # moves whose expected rewards differ by less are equally good


def optimal_moves(values: dict[Move, MoveValue]) -> set[str]:
    """The names of every move whose expected reward ties the best (within ``TIE``)."""
    top = best(values).expected_reward
    return {m.value for m, v in values.items() if v.expected_reward >= top - TIE}


def oracle_value(task: Task, costs: Costs, max_questions: int = 1, metric: str = "f1") -> MoveValue:
    """The Bayes-optimal move for a task and its expected reward: the ceiling for any policy."""
    return best(move_values(task_meanings(task), costs, task.query, max_questions, metric))


def policy_expectation(env: Any, policy: Any, task: Task, costs: Costs) -> tuple[float, float]:
    """Exact expected reward and final-response words of a deterministic ``policy`` (any
    object with ``act``) on ``task``: one episode of ``env`` per meaning, weighted by its prior."""
    reward = words = 0.0
    for index, prior in enumerate(task.priors):
        obs, _ = env.reset(seed=0, options={"task": task, "costs": costs, "interpretation": index})
        total, done, info = 0.0, False, {}
        while not done:
            obs, r, terminated, truncated, info = env.step(policy.act(obs))
            total += r
            done = terminated or truncated
        reward += prior * total
        words += prior * info["reward_components"]["words"]
    return reward, words
