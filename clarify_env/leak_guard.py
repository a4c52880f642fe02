"""The leak guard of the user simulators: a reply must never state a gold answer, disguised or not.

Both sides are brought to one canonical form before they are compared: Unicode NFKC (full-width
and styled letters become plain ones), zero-width and other invisible format characters and
combining marks removed (so decomposed accents compare as the bare letter), Cyrillic and Greek
look-alike letters mapped to their Latin twins, case folded, then split into runs of letters and
digits (punctuation and hyphens separate tokens). A reply leaks an answer when some run of its
consecutive tokens, written together, spells the answer written together (with or without its
articles, as SQuAD's normalisation drops them):
that catches the answer as it is, with hyphens or joined words ("Rezo-Shafen", "RezoShafen"),
letter-spaced ("R e z o"), with zero-width spaces or look-alike letters.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Iterable

# Cyrillic and Greek letters that look like Latin ones (lower case: the text is case-folded first)
LOOK_ALIKES = str.maketrans(
    {
        "а": "a",
        "в": "b",
        "е": "e",
        "ё": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "і": "i",
        "ї": "i",
        "ј": "j",
        "ѕ": "s",
        "ԁ": "d",
        "ԛ": "q",
        "ԝ": "w",
        "ɑ": "a",
        "α": "a",
        "β": "b",
        "ε": "e",
        "η": "n",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "ϲ": "c",
        "ℓ": "l",
    }
)
_TOKEN = re.compile(r"[^\W_]+")
_ARTICLES = frozenset({"a", "an", "the"})


@functools.lru_cache(maxsize=65536)
def guard_tokens(text: str) -> tuple[str, ...]:
    """``text`` in the guard's canonical form (see the module docstring), as tokens."""
    text = unicodedata.normalize("NFKC", text)
    kept = (
        ch
        for ch in unicodedata.normalize("NFKD", text)
        if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf"
    )
    text = "".join(kept).casefold().translate(LOOK_ALIKES)
    return tuple(_TOKEN.findall(text))


def contains_answer(text: str, golds: Iterable[str]) -> bool:
    """True when ``text`` spells any gold answer (see the module docstring)."""
    hay = guard_tokens(text)
    for gold in golds:
        tokens = guard_tokens(gold)
        needles = {"".join(tokens), "".join(t for t in tokens if t not in _ARTICLES)} - {""}
        if any(_spelled(hay, needle) for needle in needles):
            return True
    return False


def _spelled(hay: tuple[str, ...], needle: str) -> bool:
    """Whether consecutive tokens of ``hay``, written together, spell ``needle``."""
    for start in range(len(hay)):
        joined = ""
        for token in hay[start:]:
            joined += token
            if len(joined) >= len(needle):
                break
        if joined == needle:
            return True
    return False
