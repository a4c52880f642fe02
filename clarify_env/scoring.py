"""Scoring, in one place: the rules, how the user reads a final response, its accuracy, the
prices paid, and the expected reward over the user's meanings.

    reward = accuracy - alpha * questions - beta * words(final response) - protocol penalty

The env scores every episode here, the scripted user reads final responses with
``taken_away``, the oracle values each move with ``expected_score``, and evaluation and the
label audit take the ``Rules`` the episodes were played under. Changing how a response is read
or scored changes all of them together.
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass, fields
from typing import Any, Iterable, Literal, Mapping, Sequence

from clarify_env.costs import Costs
from clarify_env.matching import pick_item
from clarify_env.protocol import Action, Move
from clarify_env.tasks import Task
from clarify_env.text import answer_tokens, count_words, normalize_answer

METRICS = ("f1", "em")
UNITS = ("words", "tokens")


class RulesError(ValueError):
    """A rule of the environment has an invalid value (the message names it)."""


@dataclass(frozen=True)
class Rules:
    """The rules episodes are scored under; one frozen value that the env, evaluation, the
    label audit and the oracle all take.

    ``max_questions``: clarifying questions allowed (one more truncates the episode with
    accuracy 0); ``protocol_error_penalty``: subtracted when a message does not parse (the
    episode then ends with accuracy 0); ``accuracy_metric``: ``"f1"`` (token F1) or ``"em"``
    (exact match) of the answer the user takes away; ``word_unit``: what the word price is paid
    per, ``"words"`` of the final response or ``"tokens"`` of it in ``word_tokenizer`` (a
    tokenizer's path or hub id).
    """

    max_questions: int = 1
    protocol_error_penalty: float = 0.1
    accuracy_metric: Literal["f1", "em"] = "f1"
    word_unit: Literal["words", "tokens"] = "words"
    word_tokenizer: str | None = None

    def __post_init__(self) -> None:
        q = self.max_questions
        if isinstance(q, bool) or not isinstance(q, int) or q < 0:
            raise RulesError(f"max_questions must be a whole number >= 0, got {q!r}")
        p = self.protocol_error_penalty
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0:
            raise RulesError(f"protocol_error_penalty must be a finite number >= 0, got {p!r}")
        object.__setattr__(self, "protocol_error_penalty", float(p))
        if self.accuracy_metric not in METRICS:
            raise RulesError(f"accuracy_metric must be 'f1' or 'em', got {self.accuracy_metric!r}")
        if self.word_unit not in UNITS:
            raise RulesError(f"word_unit must be 'words' or 'tokens', got {self.word_unit!r}")
        if self.word_unit == "tokens" and not isinstance(self.word_tokenizer, str):
            raise RulesError(
                f"word_unit 'tokens' needs word_tokenizer (a tokenizer's path or hub id), got {self.word_tokenizer!r}"
            )

    @property
    def unit(self) -> str:
        """The priced unit in the singular, as prompts name it ("word" or "token")."""
        return self.word_unit[:-1]

    @classmethod
    def of(cls, value: Rules | Mapping[str, Any] | None) -> Rules:
        """``value`` as Rules: a Rules as is, a mapping of its fields, None for the defaults."""
        if value is None:
            return cls()
        if isinstance(value, Rules):
            return value
        if not isinstance(value, Mapping):
            raise RulesError(f"rules must be a Rules or a mapping of its fields, got {type(value).__name__}")
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise RulesError(f"unknown rule(s) {sorted(unknown)}; the rules are {[f.name for f in fields(cls)]}")
        return cls(**value)


# --- accuracy -------------------------------------------------------------------------------


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


# --- one episode's reward -----------------------------------------------------------------------


@dataclass(frozen=True)
class RewardComponents:
    """Every term of an episode's reward. ``accuracy`` is F1 or EM (``Rules.accuracy_metric``)."""

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


def score(
    taken_away: str | None,
    golds: Iterable[str],
    costs: Costs,
    questions: int,
    words: int,
    rules: Rules,
    protocol_error: bool = False,
) -> RewardComponents:
    """Score one finished episode: the answer the user took away (None: no final answer,
    accuracy 0) against its meaning's gold aliases, the questions asked, the final response's
    words, and the protocol penalty when the episode ended on a message that did not parse."""
    golds = tuple(golds)
    if taken_away is None:
        f1 = em = 0.0
    else:
        f1, em = best_f1(taken_away, golds), best_em(taken_away, golds)
    accuracy = f1 if rules.accuracy_metric == "f1" else em
    q_cost, w_cost = costs.question * questions, costs.word * words
    penalty = rules.protocol_error_penalty if protocol_error else 0.0
    return RewardComponents(
        accuracy=accuracy,
        f1=f1,
        exact_match=em,
        questions=questions,
        words=words,
        question_cost=q_cost,
        word_cost=w_cost,
        protocol_penalty=penalty,
        reward=accuracy - q_cost - w_cost - penalty,
    )


def final_words(action: Action, rules: Rules = Rules()) -> int:
    """The units of a final response the word price is charged on (its text after the tag): its
    words, or its tokens in ``rules.word_tokenizer`` (``Rules.word_unit``)."""
    if rules.word_unit == "words":
        return count_words(action.text)
    return len(_tokenizer(rules.word_tokenizer)(action.text, add_special_tokens=False)["input_ids"])


@functools.lru_cache(maxsize=4)
def _tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


# --- the user's meanings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Meaning:
    """One interpretation as it is scored and reasoned about: the facet a user names it by, its
    canonical answer, its prior, and every gold alias."""

    facet: str
    answer: str
    prior: float
    golds: tuple[str, ...]


def meanings_of(task: Task) -> list[Meaning]:
    """The task's meanings in the task's order (the user's hidden interpretation indexes them)."""
    return [Meaning(i.facet, i.answer, p, i.answers) for i, p in zip(task.interpretations, task.priors)]


def taken_away(action: Action, facets: Sequence[str], own: int, query: str = "") -> str:
    """The answer a user meaning ``facets[own]`` takes from a final response: an ANSWER's text as
    it is; from a MULTI, the item whose label points at its own facet (the first item when none
    does). ``query`` is left out of the words that tell the facets apart."""
    if action.move is not Move.MULTI:
        return action.text
    labels = [item.facet for item in action.items]
    return action.items[pick_item(labels, facets, own, query)].answer


@dataclass(frozen=True)
class Expectation:
    """A final response's reward, accuracy and words averaged over the user's meanings."""

    reward: float
    accuracy: float
    words: float


def expected_score(
    meanings: Sequence[Meaning],
    finals: Action | Sequence[Action],
    costs: Costs,
    rules: Rules,
    query: str = "",
    questions: int = 0,
) -> Expectation:
    """The score of a final response averaged over the user's meanings, each weighted by its
    prior: meaning i reads ``finals`` (one action for every meaning, or ``finals[i]`` for
    meaning i, as after a clarification) with ``taken_away``; ``questions`` were asked first."""
    facets = [m.facet for m in meanings]
    reward = accuracy = words = 0.0
    for i, meaning in enumerate(meanings):
        final = finals if isinstance(finals, Action) else finals[i]
        n_words = final_words(final, rules)
        parts = score(taken_away(final, facets, i, query), meaning.golds, costs, questions, n_words, rules)
        reward += meaning.prior * parts.reward
        accuracy += meaning.prior * parts.accuracy
        words += meaning.prior * n_words
    return Expectation(reward, accuracy, words)
