"""The open-book context format: what the assistant privately knows about each meaning.

Every open-book source renders its assistant-only context with ``render_context`` so that
LLMs, scripted policies and the oracle read one documented format::

    Possible meanings (private notes; the user cannot see them):
    a) 1987 series [62% of users]: Varo Melkin
    b) 2012 series [38% of users]: Dessa Quorn

``parse_context`` inverts it (lines in other formats, e.g. extra facts, are ignored).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Sequence

from clarify_env.tasks import Interpretation

HEADER = "Possible meanings (private notes; the user cannot see them):"
_LINE = re.compile(r"^([a-z])\) (.+?) \[(\d+(?:\.\d+)?)% of users\]: (.+)$")


@dataclass(frozen=True)
class ContextEntry:
    """One meaning as the assistant sees it: label, facet, share of users (0-1), answer."""

    label: str
    facet: str
    share: float
    answer: str


def percent_shares(priors: Sequence[float]) -> list[int]:
    """Integer percentages summing to 100 (largest remainder), for display."""
    total = sum(priors)
    raw = [100.0 * p / total for p in priors]
    floors = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (floors[i] - raw[i], i))
    for i in order[: 100 - sum(floors)]:
        floors[i] += 1
    return floors


def render_context(interpretations: Sequence[Interpretation], notes: Sequence[str] = ()) -> str:
    """Render the canonical open-book context for a task's interpretations."""
    if len(interpretations) > len(string.ascii_lowercase):
        raise ValueError("at most 26 interpretations can be rendered")
    shares = percent_shares([i.prior for i in interpretations])
    lines = [HEADER]
    for label, interp, share in zip(string.ascii_lowercase, interpretations, shares):
        lines.append(f"{label}) {interp.facet} [{share}% of users]: {interp.answer}")
    lines.extend(notes)
    return "\n".join(lines)


def parse_context(context: str | None) -> list[ContextEntry]:
    """Entries of a context written by ``render_context``; empty for closed-book tasks."""
    if not context:
        return []
    entries = []
    for line in context.splitlines():
        m = _LINE.match(line.strip())
        if m:
            label, facet, share, answer = m.groups()
            entries.append(ContextEntry(label, facet, float(share) / 100.0, answer))
    return entries
