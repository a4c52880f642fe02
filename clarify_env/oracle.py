"""The Bayes-optimal move for a task at given prices.

With meanings of prior p_i: a guess of meaning j earns sum_i p_i acc(answer_j, gold_i);
an enumeration earns ~1 but pays for every item's words; a clarification earns ~1 but
pays alpha. ``move_values`` plays each move's best message through ``clarify_env.scoring``
(the reading, accuracy and prices the env scores episodes with) against every meaning, the
clarification followed by the answer the user's reply (its facet, as the scripted user says
it) points at; ``best`` picks the maximum.

Meanings come from the task itself (``task_meanings``: the ceiling) or from the
assistant's visible context (``context_meanings``: what a policy can act on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from clarify_env.context import parse_context
from clarify_env.costs import Costs
from clarify_env.matching import best_match, guarded_naming_reply
from clarify_env.protocol import MOVES, Action, Move, answer, clarify, multi, parse_action
from clarify_env.scoring import Meaning, Rules, expected_score, meanings_of
from clarify_env.tasks import Task

TIE = 1e-9  # moves whose expected rewards differ by less are equally good


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
    return likeliest_first(meanings_of(task))


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


def guess_index(meanings: Sequence[Meaning]) -> int:
    """The most likely meaning (first on ties)."""
    return max(range(len(meanings)), key=lambda i: (meanings[i].prior, -i))


def _final(message: str) -> Action:
    action = parse_action(message)
    if not isinstance(action, Action):
        raise ValueError(f"the oracle wrote a message the protocol rejects: {message!r} ({action.reason})")
    return action


def move_values(
    meanings: Sequence[Meaning], costs: Costs, query: str = "", rules: Rules = Rules()
) -> dict[Move, MoveValue]:
    """Expected reward of the best message for each move (CLARIFY only if allowed)."""
    if not meanings:
        raise ValueError("no meanings to reason about (closed-book task?)")
    facets = [m.facet for m in meanings]
    values: dict[Move, MoveValue] = {}

    def value(move: Move, message: str, finals: Action | list[Action], questions: int = 0) -> MoveValue:
        e = expected_score(meanings, finals, costs, rules, query, questions)
        return MoveValue(move, message, e.reward, e.accuracy, e.words, questions)

    guesses = [value(Move.ANSWER, answer(m.answer), _final(answer(m.answer))) for m in meanings]
    values[Move.ANSWER] = max(enumerate(guesses), key=lambda jv: (jv[1].expected_reward, -jv[0]))[1]
    message = multi([(m.facet, m.answer) for m in meanings])
    values[Move.MULTI] = value(Move.MULTI, message, _final(message))
    if rules.max_questions >= 1:
        fallback = guess_index(meanings)
        # the user names its facet (unless that states a gold answer: then it says it is not
        # sure); the answer is the meaning that reply points at
        chosen = [
            None if guarded_naming_reply(m.facet, m.golds) is None else best_match(m.facet, facets, query)
            for m in meanings
        ]
        follow_ups = [_final(answer(meanings[fallback if c is None else c].answer)) for c in chosen]
        values[Move.CLARIFY] = value(Move.CLARIFY, clarify(clarifying_question(facets)), follow_ups, questions=1)
    return values


def best(values: dict[Move, MoveValue]) -> MoveValue:
    """The highest expected reward; ties go to ANSWER, then MULTI, then CLARIFY."""
    return max((values[m] for m in MOVES if m in values), key=lambda v: v.expected_reward)


def optimal_moves(values: dict[Move, MoveValue]) -> set[str]:
    """The names of every move whose expected reward ties the best (within ``TIE``)."""
    top = best(values).expected_reward
    return {m.value for m, v in values.items() if v.expected_reward >= top - TIE}


def oracle_value(task: Task, costs: Costs, rules: Rules = Rules()) -> MoveValue:
    """The Bayes-optimal move for a task and its expected reward: the ceiling for any policy."""
    return best(move_values(task_meanings(task), costs, task.query, rules))
