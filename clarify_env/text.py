"""Text primitives: SQuAD-style answer normalisation, answer tokens, and the word count."""

from __future__ import annotations

import functools
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_DROP_PUNCT = str.maketrans("", "", string.punctuation)
_WORD = re.compile(r"\w")


@functools.lru_cache(maxsize=65536)
def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD v1.1)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_DROP_PUNCT))
    return " ".join(text.split())


def answer_tokens(text: str) -> tuple[str, ...]:
    """The normalised tokens of ``text``."""
    return tuple(normalize_answer(text).split())


def count_words(text: str) -> int:
    """Words of a response: whitespace-separated pieces holding a letter or digit."""
    return sum(1 for piece in text.split() if _WORD.search(piece))
