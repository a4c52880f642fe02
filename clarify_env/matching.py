"""Which interpretation a piece of text points at: the label it names in full, else by
distinguishing words.

Shared by the scripted user (is a clarifying question on topic? which MULTI item is
mine?), the oracle and scripted assistants (which meaning did the user pick?).
"""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

from clarify_env.leak_guard import contains_answer
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


_tokens = functools.lru_cache(maxsize=65536)(answer_tokens)


def _contains(tokens: tuple[str, ...], part: tuple[str, ...]) -> bool:
    n = len(part)
    return n > 0 and any(tokens[i : i + n] == part for i in range(len(tokens) - n + 1))


def holds_in_full(text: str, label: str) -> bool:
    """Whether ``text`` holds ``label``'s normalised tokens, in order (a non-empty label)."""
    return _contains(_tokens(text), _tokens(label))


def best_match(text: str, labels: Sequence[str], exclude: str = "") -> int | None:
    """Index of the label ``text`` points at; None if it points at none or at several alike.

    A label that ``text`` holds in full (its normalised tokens, in order: a reply that is the
    facet, "End." or "I mean what episode they were married in") wins, the longest if several
    do; otherwise the label whose distinguishing terms ``text`` mentions most (the facets' shared
    words and those of ``exclude``, the query, do not count: "end" cannot tell "Beginning." from
    "End." when the question asks where a river begins and ends, but the whole facet can).
    """
    if not labels:
        return None
    tokens = _tokens(text)
    held = [len(_tokens(label)) if _contains(tokens, _tokens(label)) else 0 for label in labels]
    longest = max(held)
    if longest and held.count(longest) == 1:
        return held.index(longest)
    words = content_terms(text)
    scores = [len(words & t) for t in distinguishing_terms(labels, exclude)]
    top = max(scores)
    if top == 0 or scores.count(top) > 1:
        return None
    return scores.index(top)


def naming_reply(facet: str) -> str:
    """The reply that names ``facet``: the facet itself where it ends a sentence ("Lyrics."),
    else ``"I mean <facet>."``."""
    facet = facet.strip()
    return facet if facet[-1] in ".!?" else f"I mean {facet}."


def guarded_naming_reply(facet: str, golds: Iterable[str]) -> str | None:
    """:func:`naming_reply` of ``facet``, or None where that reply would state a gold answer (the
    leak guard's test): the scripted user then says it is not sure, and the oracle models that."""
    text = naming_reply(facet)
    return None if contains_answer(text, golds) else text


def pick_item(item_labels: Sequence[str], facets: Sequence[str], own: int, exclude: str = "") -> int:
    """The item a user whose meaning is ``facets[own]`` takes from an enumeration: the first
    item whose label points at ``own``; the first item when none does."""
    for k, label in enumerate(item_labels):
        if best_match(label, facets, exclude) == own:
            return k
    return 0
