"""The text action protocol: three moves, one tag each.

The assistant's message must start with one tag (case and surrounding whitespace,
markdown bold and a ``-`` instead of ``:`` are tolerated)::

    CLARIFY: <one clarifying question>
    ANSWER: <one answer>
    MULTI: <facet>: <answer>; <facet>: <answer>; ...

MULTI items may also be separated by newlines and carry enumerators (``a)``, ``1.``,
``-``). ``MULTI-ANSWER`` / ``MULTI_ANSWER`` are accepted as ``MULTI``. Anything else is
a ``ProtocolError`` value (never an exception).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Move(str, enum.Enum):
    """The assistant's three moves."""

    CLARIFY = "CLARIFY"
    ANSWER = "ANSWER"
    MULTI = "MULTI"


MOVES: tuple[Move, ...] = (Move.ANSWER, Move.MULTI, Move.CLARIFY)


@dataclass(frozen=True)
class MultiItem:
    """One interpretation's answer in a MULTI response; ``facet`` may be empty."""

    facet: str
    answer: str


@dataclass(frozen=True)
class Action:
    """A parsed assistant message: the move and its content (text after the tag)."""

    move: Move
    text: str
    items: tuple[MultiItem, ...] = ()

    @property
    def is_final(self) -> bool:
        return self.move is not Move.CLARIFY


@dataclass(frozen=True)
class ProtocolError:
    """A message that does not follow the protocol, with the reason."""

    raw: str
    reason: str


# One character class for the leading whitespace and markdown (not `\s*` then a class that also
# matches whitespace: the two would split a long run of spaces every way, quadratic in its length).
_TAG = re.compile(
    r"^[*_#`>\s]*(CLARIFY|ANSWER|MULTI(?:[-_ ]?ANSWERS?)?)[*_`\s]*[:\-–][*_\s]*(.*)$",
    re.IGNORECASE | re.DOTALL,
)
# List markers a MULTI item may start with: "1." "12)" "(3)" "a." "b)" "(c)" "A)" "(B)" and bullets.
# Not "Dr." / "St." / "J." (titles, abbreviations and initials open facets and answers).
_ENUM = re.compile(r"^\s*(?:\(?\d{1,2}[).]|\(?[a-z][).]|\(?[A-Z]\)|[-*•])\s+")
_FACET_SPLIT = re.compile(r":\s+")


def parse_action(message: str) -> Action | ProtocolError:
    """Parse an assistant message into an ``Action`` or a ``ProtocolError``."""
    if not isinstance(message, str):
        return ProtocolError(repr(message), f"message must be a string, got {type(message).__name__}")
    m = _TAG.match(message)
    if m is None:
        reason = "empty message" if not message.strip() else "no CLARIFY:/ANSWER:/MULTI: tag at the start"
        return ProtocolError(message, reason)
    tag, body = m.group(1).upper(), m.group(2).strip()
    move = Move.MULTI if tag.startswith("MULTI") else Move(tag)
    if not body:
        return ProtocolError(message, f"{move.value} has no content")
    if move is not Move.MULTI:
        return Action(move, body)
    items = parse_multi_items(body)
    if not items:
        return ProtocolError(message, "MULTI has no answers")
    return Action(move, body, items)


def parse_multi_items(body: str) -> tuple[MultiItem, ...]:
    """Split a MULTI body into ``facet: answer`` items."""
    items = []
    for chunk in re.split(r"[;\n]", body):
        if not chunk or chunk.isspace():
            continue
        chunk = _ENUM.sub("", chunk, count=1).strip()
        if not chunk:
            continue
        parts = _FACET_SPLIT.split(chunk, maxsplit=1)
        facet, answer = (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else ("", chunk)
        if answer:
            items.append(MultiItem(facet, answer))
    return tuple(items)


def format_action(action: Action) -> str:
    """The canonical message text of an action; ``parse_action`` round-trips it."""
    if action.move is Move.MULTI and action.items:
        return f"MULTI: {multi_body(action.items)}"
    return f"{action.move.value}: {action.text}"


def clarify(question: str) -> str:
    return format_action(Action(Move.CLARIFY, question))


def answer(text: str) -> str:
    return format_action(Action(Move.ANSWER, text))


def multi(items: list[tuple[str, str]]) -> str:
    return format_action(Action(Move.MULTI, "", tuple(MultiItem(f, a) for f, a in items)))


def multi_body(items: tuple[MultiItem, ...]) -> str:
    """The MULTI body text for items (what the word price is charged on)."""
    return "; ".join(f"{i.facet}: {i.answer}" if i.facet else i.answer for i in items)


def protocol_description(unit: str = "word") -> str:
    """The protocol as the assistant's system prompt states it (``unit``: "word" or "token")."""
    return (
        "Reply with exactly one of these moves, starting with its tag:\n"
        "CLARIFY: <one short clarifying question>   (costs the question price)\n"
        "ANSWER: <your answer to the meaning you think the user has>\n"
        "MULTI: <meaning>: <answer>; <meaning>: <answer>   (one answer per meaning)\n"
        f"Your final response (ANSWER or MULTI) costs the {unit} price for each of its {unit}s."
    )
