"""Scoring: SQuAD-style normalisation, token F1, exact match, and the cost-penalised reward.

    reward = accuracy - alpha * questions - beta * words(final response) - protocol penalty
"""

from __future__ import annotations

import collections
import functools
import re
import string
from dataclasses import dataclass, fields
from typing import Iterable

from clarify_env.costs import Costs

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_DROP_PUNCT = str.maketrans("", "", string.punctuation)
_WORD = re.compile(r"\w")


@functools.lru_cache(maxsize=65536)
def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD v1.1)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_DROP_PUNCT))
    return " ".join(text.split())


def answer_tokens(text: str) -> tuple[str, ...]:
    return tuple(normalize_answer(text).split())


@functools.lru_cache(maxsize=65536)
def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 between one prediction and one gold answer."""
    pred, ref = answer_tokens(prediction), answer_tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def best_f1(prediction: str, golds: Iterable[str]) -> float:
    """Max token F1 over gold aliases."""
    return max((token_f1(prediction, g) for g in golds), default=0.0)


def best_em(prediction: str, golds: Iterable[str]) -> float:
    """Max exact match over gold aliases."""
    return max((exact_match(prediction, g) for g in golds), default=0.0)


def count_words(text: str) -> int:
    """Words of a response: whitespace-separated pieces holding a letter or digit."""
    return sum(1 for piece in text.split() if _WORD.search(piece))


def contains_answer(text: str, golds: Iterable[str]) -> bool:
    """True when the normalised tokens of any gold answer appear contiguously in ``text``."""
    hay = answer_tokens(text)
    for gold in golds:
        needle = answer_tokens(gold)
        if needle and any(hay[i : i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1)):
            return True
    return False


@dataclass(frozen=True)
class RewardComponents:
    """Every term of an episode's reward. ``accuracy`` is F1 or EM (``metric``)."""

    accuracy: float
    f1: float
    exact_match: float
    questions: int
    words: int
    question_cost: float
    word_cost: float
    protocol_penalty: float
    reward: float

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def compute_reward(
    extracted_answer: str | None,
    golds: Iterable[str],
    costs: Costs,
    questions: int,
    words: int,
    protocol_penalty: float = 0.0,
    metric: str = "f1",
) -> RewardComponents:
    """Score one finished episode. ``extracted_answer=None`` (no final answer) scores 0."""
    golds = tuple(golds)
    if extracted_answer is None:
        f1 = em = 0.0
    else:
        f1, em = best_f1(extracted_answer, golds), best_em(extracted_answer, golds)
    if metric not in ("f1", "em"):
        raise ValueError(f"accuracy metric must be 'f1' or 'em', got {metric!r}")
    accuracy = f1 if metric == "f1" else em
    q_cost, w_cost = costs.question * questions, costs.word * words
    return RewardComponents(
        accuracy=accuracy, f1=f1, exact_match=em, questions=questions, words=words,
        question_cost=q_cost, word_cost=w_cost, protocol_penalty=protocol_penalty,
        reward=accuracy - q_cost - w_cost - protocol_penalty,
    )
