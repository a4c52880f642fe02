"""Typed tasks: an ambiguous query, its interpretations, and assistant-only context."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping


class TaskError(ValueError):
    """A task (or a record it was built from) is malformed."""


@dataclass(frozen=True)
class Interpretation:
    """One meaning of an ambiguous query.

    ``question`` is the disambiguated question, ``answers`` the gold answers (aliases of
    one answer; scoring takes the best), ``prior`` the weight of this meaning among users
    (normalised by the task), and ``facet`` the short phrase a user says to pick it out
    ("the 1987 series", "basketball").
    """

    question: str
    answers: tuple[str, ...]
    prior: float
    facet: str

    def __post_init__(self) -> None:
        for name in ("question", "facet"):
            if not isinstance(getattr(self, name), str):
                raise TaskError(f"interpretation {name} must be a string, got {getattr(self, name)!r}")
        if isinstance(self.answers, str) or not isinstance(self.answers, (list, tuple)):
            raise TaskError(
                f"interpretation {self.question!r}: answers must be a list of strings (aliases of one "
                f"answer), got {self.answers!r}"
            )
        object.__setattr__(self, "answers", tuple(self.answers))
        if not self.question.strip():
            raise TaskError("interpretation has an empty question")
        if not self.answers or not all(isinstance(a, str) and a.strip() for a in self.answers):
            raise TaskError(f"interpretation {self.question!r} needs at least one non-empty answer")
        prior = self.prior
        if isinstance(prior, bool) or not (isinstance(prior, (int, float)) and math.isfinite(prior) and prior >= 0):
            raise TaskError(f"interpretation {self.question!r} has invalid prior {self.prior!r}")
        if not self.facet.strip():
            raise TaskError(f"interpretation {self.question!r} has an empty facet")
        if any("\n" in text for text in (self.facet, *self.answers)):
            raise TaskError(f"interpretation {self.question!r}: facet and answers must be single lines")

    @property
    def answer(self) -> str:
        """The canonical (first) gold answer."""
        return self.answers[0]


@dataclass(frozen=True)
class Task:
    """A query with one or more interpretations.

    ``context`` is shown to the assistant only (open-book setting); ``None`` means
    closed-book. ``dimension`` names what separates the interpretations ("year",
    "medium", ...) when known; the scripted user treats a clarifying question that
    mentions it as on-topic.
    """

    id: str
    query: str
    interpretations: tuple[Interpretation, ...]
    context: str | None = None
    dimension: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "interpretations", tuple(self.interpretations))
        if not isinstance(self.query, str):
            raise TaskError(f"task {self.id}: the query must be a string, got {self.query!r}")
        if not str(self.id):
            raise TaskError("task has an empty id")
        if not self.query.strip():
            raise TaskError(f"task {self.id}: empty query")
        if not self.interpretations:
            raise TaskError(f"task {self.id}: no interpretations")
        if sum(i.prior for i in self.interpretations) <= 0:
            raise TaskError(f"task {self.id}: interpretation priors sum to zero")

    @property
    def priors(self) -> tuple[float, ...]:
        """Interpretation priors normalised to sum to one."""
        total = sum(i.prior for i in self.interpretations)
        return tuple(i.prior / total for i in self.interpretations)

    @property
    def is_ambiguous(self) -> bool:
        return len(self.interpretations) > 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; ``Task.from_dict`` inverts it."""
        d = asdict(self)
        d["interpretations"] = [{**i, "answers": list(i["answers"])} for i in d["interpretations"]]
        d["metadata"] = dict(self.metadata)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        try:
            if not isinstance(d["interpretations"], (list, tuple)):
                raise TaskError(f"'interpretations' must be a list of objects, got {d['interpretations']!r}")
            interps = tuple(Interpretation(**i) for i in d["interpretations"])
            return cls(
                id=str(d["id"]),
                query=d["query"],
                interpretations=interps,
                context=d.get("context"),
                dimension=d.get("dimension"),
                metadata=dict(d.get("metadata") or {}),
            )
        except (KeyError, TypeError) as e:
            raise TaskError(f"task record is missing or has a bad field: {e}") from e
