"""Prices of a clarifying question (alpha) and of a word (beta), and how to draw them.

Samplers are deterministic given a ``numpy.random.Generator``. Continuous samplers can
hold out bands (open intervals) so that evaluation at unseen prices is one option away:
``COST_SPLITS["default"]`` pairs a training sampler with held-out and extrapolation grids.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

QUESTION_DECIMALS = 3
WORD_DECIMALS = 4


class CostSpecError(ValueError):
    """A cost specification (from config or code) is invalid."""


@dataclass(frozen=True)
class Costs:
    """``question`` = alpha, the price of one clarifying question; ``word`` = beta, the price
    of one word of the final response."""

    question: float
    word: float

    def __post_init__(self) -> None:
        for name in ("question", "word"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise CostSpecError(f"cost '{name}' must be a finite number >= 0, got {v!r}")
        object.__setattr__(self, "question", float(self.question))
        object.__setattr__(self, "word", float(self.word))

    def as_array(self) -> np.ndarray:
        return np.array([self.question, self.word], dtype=np.float32)

    @classmethod
    def from_array(cls, values: Any) -> Costs:
        """Prices from an observation's float32 ``costs`` array, rounded back to what they
        were (float32 keeps ~7 significant digits)."""
        question, word = (float(x) for x in values)
        return cls(round(question, QUESTION_DECIMALS + 3), round(word, WORD_DECIMALS + 3))

    def to_dict(self) -> dict[str, float]:
        return {"question": self.question, "word": self.word}

    def describe(self, unit: str = "word") -> str:
        """The prices as the assistant reads them (``unit``: what the word price is paid per)."""
        return (
            f"Price of a clarifying question: {format_price(self.question, QUESTION_DECIMALS)}. "
            f"Price of each {unit} of your final response: {format_price(self.word, WORD_DECIMALS)}."
        )


def format_price(value: float, decimals: int) -> str:
    """Fixed-decimal text of a price, with more digits only when needed to be exact."""
    text = f"{value:.{decimals}f}"
    return text if float(text) == value else repr(float(value))


class CostSampler(Protocol):
    """Anything that draws ``Costs`` from a generator."""

    def sample(self, rng: np.random.Generator) -> Costs: ...


@dataclass(frozen=True)
class FixedCosts:
    """Always the same prices."""

    costs: Costs

    def sample(self, rng: np.random.Generator) -> Costs:
        return self.costs

    def points(self) -> list[Costs]:
        return [self.costs]


@dataclass(frozen=True)
class GridCosts:
    """Uniform over the product of question prices and word prices."""

    question: tuple[float, ...]
    word: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "question", tuple(float(v) for v in self.question))
        object.__setattr__(self, "word", tuple(float(v) for v in self.word))
        if not self.question or not self.word:
            raise CostSpecError("a cost grid needs at least one question price and one word price")
        self.points()  # validates every value

    def points(self) -> list[Costs]:
        return [Costs(q, w) for q, w in itertools.product(self.question, self.word)]

    def sample(self, rng: np.random.Generator) -> Costs:
        return Costs(
            self.question[int(rng.integers(len(self.question)))],
            self.word[int(rng.integers(len(self.word)))],
        )


@dataclass(frozen=True)
class CostPoints:
    """Uniform over an explicit list of price points (e.g. one-price-at-a-time sweeps)."""

    costs: tuple[Costs, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "costs", tuple(self.costs))
        if not self.costs:
            raise CostSpecError("a list of cost points needs at least one point")

    def points(self) -> list[Costs]:
        return list(self.costs)

    def sample(self, rng: np.random.Generator) -> Costs:
        return self.costs[int(rng.integers(len(self.costs)))]


def sweeps(question: Sequence[float], word: Sequence[float], at_question: float, at_word: float) -> CostPoints:
    """Vary one price at a time: every question price at ``at_word``, then every word
    price at ``at_question`` (the crossing point once)."""
    points = [Costs(q, at_word) for q in question]
    points += [Costs(at_question, w) for w in word if Costs(at_question, w) not in points]
    return CostPoints(tuple(points))


@dataclass(frozen=True)
class Range:
    """A price range ``[low, high]`` drawn uniformly or log-uniformly, minus held-out bands.

    Log-uniform draws ``log(value + offset)`` uniformly, so a range may start at 0.
    """

    low: float
    high: float
    log: bool = False
    offset: float = 0.0
    exclude: tuple[tuple[float, float], ...] = ()
    decimals: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(tuple(map(float, b)) for b in self.exclude))
        if not (0 <= self.low <= self.high) or not math.isfinite(self.high):
            raise CostSpecError(f"price range needs 0 <= low <= high, got [{self.low}, {self.high}]")
        if self.log and self.low + self.offset <= 0:
            raise CostSpecError("a log-uniform range needs low + offset > 0 (set 'offset' to start at 0)")
        for lo, hi in self.exclude:
            if not lo < hi:
                raise CostSpecError(f"held-out band ({lo}, {hi}) must have low < high")
        if self._allowed_measure() <= 0:
            raise CostSpecError(f"held-out bands cover the whole range [{self.low}, {self.high}]")

    def _allowed_measure(self) -> float:
        covered = sum(max(0.0, min(hi, self.high) - max(lo, self.low)) for lo, hi in self.exclude)
        return (self.high - self.low) - covered if self.high > self.low else 1.0

    def held_out(self, value: float) -> bool:
        return any(lo < value < hi for lo, hi in self.exclude)

    def sample(self, rng: np.random.Generator) -> float:
        for _ in range(10_000):
            if self.log:
                a, b = math.log(self.low + self.offset), math.log(self.high + self.offset)
                v = math.exp(rng.uniform(a, b)) - self.offset
            else:
                v = rng.uniform(self.low, self.high)
            v = min(max(round(v, self.decimals), self.low), self.high)
            if not self.held_out(v):
                return v
        raise CostSpecError("could not draw a price outside the held-out bands")


@dataclass(frozen=True)
class RangeCosts:
    """Independent continuous draws of the question and the word price."""

    question: Range
    word: Range

    def sample(self, rng: np.random.Generator) -> Costs:
        return Costs(self.question.sample(rng), self.word.sample(rng))

    def held_out(self, costs: Costs) -> bool:
        """True when either price lies in a held-out band."""
        return self.question.held_out(costs.question) or self.word.held_out(costs.word)


@dataclass(frozen=True)
class CostSplit:
    """Training prices, held-out evaluation prices (inside the training range, in bands
    never sampled) and extrapolation prices (beyond the training range)."""

    train: CostSampler
    heldout: CostPoints | GridCosts
    extrapolation: CostPoints | GridCosts

    def get(self, name: str) -> CostSampler:
        if name not in ("train", "heldout", "extrapolation"):
            raise CostSpecError(f"unknown cost split part {name!r}; use train, heldout or extrapolation")
        return getattr(self, name)


_HELDOUT_Q = (0.05, 0.15, 0.25, 0.35, 0.45)
_HELDOUT_W = (0.005, 0.015, 0.025, 0.035, 0.045)

COST_SPLITS: dict[str, CostSplit] = {
    # Training draws prices continuously from [0, 0.6] x [0, 0.06] minus five bands per
    # price; evaluation sweeps one price at a time through the band centres (unseen
    # values inside the range) and beyond the range (extrapolation).
    "default": CostSplit(
        train=RangeCosts(
            question=Range(
                0.0, 0.6, exclude=tuple((q - 0.02, q + 0.02) for q in _HELDOUT_Q), decimals=QUESTION_DECIMALS
            ),
            word=Range(0.0, 0.06, exclude=tuple((w - 0.002, w + 0.002) for w in _HELDOUT_W), decimals=WORD_DECIMALS),
        ),
        heldout=sweeps(_HELDOUT_Q, _HELDOUT_W, at_question=0.25, at_word=0.025),
        extrapolation=sweeps((0.7, 0.85, 1.0), (0.07, 0.085, 0.1), at_question=0.25, at_word=0.025),
    ),
}


def _price(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CostSpecError(f"'{key}' must be a number, got {v!r}")
    return float(v)


def _tuple(v: Any, key: str) -> tuple[float, ...]:
    if isinstance(v, Sequence) and not isinstance(v, str):
        return tuple(_price(x, f"{key}[{i}]") for i, x in enumerate(v))
    return (_price(v, key),)


def _range(spec: Mapping[str, Any], key: str, log: bool, decimals: int) -> Range:
    if not isinstance(spec, Mapping) or "low" not in spec or "high" not in spec:
        raise CostSpecError(f"'{key}' must be a mapping with 'low' and 'high'")
    unknown = set(spec) - {"low", "high", "offset", "exclude", "decimals"}
    if unknown:
        raise CostSpecError(f"unknown key(s) {sorted(unknown)} in '{key}'")
    bands = spec.get("exclude", ())
    if not isinstance(bands, Sequence) or not all(isinstance(b, Sequence) and len(b) == 2 for b in bands):
        raise CostSpecError(f"'{key}.exclude' must be a list of [low, high] bands, got {bands!r}")
    return Range(
        _price(spec["low"], f"{key}.low"),
        _price(spec["high"], f"{key}.high"),
        log=log,
        offset=_price(spec.get("offset", 0.0), f"{key}.offset"),
        exclude=tuple((_price(lo, f"{key}.exclude"), _price(hi, f"{key}.exclude")) for lo, hi in bands),
        decimals=int(_price(spec.get("decimals", decimals), f"{key}.decimals")),
    )


def make_cost_sampler(spec: Any) -> CostSampler:
    """Build a sampler from a spec.

    Accepted: a ``Costs`` or sampler object; ``{"question": 0.2, "word": 0.01}`` (fixed);
    ``{"grid": {"question": [...], "word": [...]}}``; ``{"points": [[q, w], ...]}``;
    ``{"uniform" | "loguniform": {"question": {"low", "high", "exclude"?, "offset"?}, "word": {...}}}``;
    ``"<split>:<part>"`` such as ``"default:train"`` or ``"default:heldout"``.
    """
    if isinstance(spec, Costs):
        return FixedCosts(spec)
    if hasattr(spec, "sample") and not isinstance(spec, Mapping):
        return spec
    if isinstance(spec, str):
        name, _, part = spec.partition(":")
        if name not in COST_SPLITS:
            raise CostSpecError(f"unknown cost split {name!r}; known: {sorted(COST_SPLITS)}")
        return COST_SPLITS[name].get(part or "train")
    if not isinstance(spec, Mapping):
        raise CostSpecError(f"cost spec must be a mapping or a split name, got {spec!r}")
    keys = set(spec)
    if keys == {"question", "word"} and not any(isinstance(spec[k], Mapping) for k in keys):
        return FixedCosts(Costs(spec["question"], spec["word"]))  # Costs names a price that is not a number
    if len(keys) != 1:
        raise CostSpecError(
            f"cost spec must be {{question, word}} or one of points/grid/uniform/loguniform, got keys {sorted(keys)}"
        )
    kind = next(iter(keys))
    body = spec[kind]
    if kind != "points" and (not isinstance(body, Mapping) or set(body) != {"question", "word"}):
        raise CostSpecError(f"'{kind}' needs exactly the keys 'question' and 'word'")
    if kind == "points":
        if not isinstance(body, Sequence) or isinstance(body, str):
            raise CostSpecError("'points' must be a list of [question, word] pairs")
        pairs = []
        for i, pair in enumerate(body):
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise CostSpecError(f"points[{i}] must be a [question, word] pair, got {pair!r}")
            pairs.append(Costs(_price(pair[0], f"points[{i}][0]"), _price(pair[1], f"points[{i}][1]")))
        return CostPoints(tuple(pairs))
    if kind == "grid":
        return GridCosts(_tuple(body["question"], "grid.question"), _tuple(body["word"], "grid.word"))
    if kind in ("uniform", "loguniform"):
        log = kind == "loguniform"
        return RangeCosts(
            _range(body["question"], f"{kind}.question", log, QUESTION_DECIMALS),
            _range(body["word"], f"{kind}.word", log, WORD_DECIMALS),
        )
    raise CostSpecError(f"unknown cost spec kind {kind!r}; use points, grid, uniform or loguniform")


def grid_points(spec: Any) -> list[Costs]:
    """The finite price points of a cost spec (a split such as ``"default:heldout"``, a grid, a
    list of points or one point; text may be JSON, as on a command line). A sampler without a
    finite set of points (a continuous range) is an error naming the spec."""
    from clarify_env.specs import parse_cli_spec

    sampler = make_cost_sampler(parse_cli_spec(spec) if isinstance(spec, str) else spec)
    if not hasattr(sampler, "points"):
        raise CostSpecError(f"cost spec {spec!r} has no finite grid of points to evaluate at (use a grid or a point)")
    return sampler.points()
