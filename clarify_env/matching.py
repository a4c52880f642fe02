"""Which interpretation a piece of text points at, by distinguishing words.

Shared by the scripted user (is a clarifying question on topic? which MULTI item is
mine?), the oracle and scripted assistants (which meaning did the user pick?).
"""

from __future__ import annotations

import functools
from typing import Sequence

from clarify_env.text import answer_tokens

STOPWORDS = frozenset(
    """a an the of in on at to for by with from and or is are was were be been who what when
    where which whom whose why how do does did i you he she it we they me my your this that
    these those mean meant one ones about as than then there their its his her
    please just want know question tv show""".split()
)


@functools.lru_cache(maxsize=65536)
def content_terms(text: str) -> frozenset[str]:
    """Normalised tokens of ``text`` minus stopwords."""
    return frozenset(t for t in answer_tokens(text) if t not in STOPWORDS)


def distinguishing_terms(labels: Sequence[str], exclude: str = "") -> list[frozenset[str]]:
    """For each label, its content terms that no other label shares (minus those in ``exclude``)."""
    return list(_distinguishing_terms(tuple(labels), exclude))


@functools.lru_cache(maxsize=16384)
def _distinguishing_terms(labels: tuple[str, ...], exclude: str) -> tuple[frozenset[str], ...]:
    terms = [content_terms(label) - content_terms(exclude) for label in labels]
    return tuple(t.difference(*(terms[j] for j in range(len(terms)) if j != i)) for i, t in enumerate(terms))


def best_match(text: str, labels: Sequence[str], exclude: str = "") -> int | None:
    """Index of the label whose distinguishing terms ``text`` mentions most; None if no
    label is mentioned or the best is tied."""
    if not labels:
        return None
    words = content_terms(text)
    scores = [len(words & t) for t in distinguishing_terms(labels, exclude)]
    top = max(scores)
    if top == 0 or scores.count(top) > 1:
        return None
    return scores.index(top)


def pick_item(item_labels: Sequence[str], facets: Sequence[str], own: int, exclude: str = "") -> int:
    """The item a user whose meaning is ``facets[own]`` takes from an enumeration: the first
    item whose label points at ``own``; the first item when none does."""
    for k, label in enumerate(item_labels):
        if best_match(label, facets, exclude) == own:
            return k
    return 0
