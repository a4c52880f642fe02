"""Gymnasium spaces for free-form text."""

from __future__ import annotations

import string
from typing import Any

from gymnasium.spaces import Text


class FreeText(Text):
    """A ``Text`` space that contains any string up to ``max_length`` characters.

    Gymnasium's ``Text`` restricts strings to a charset; dialogue holds arbitrary
    Unicode. Samples are drawn from printable ASCII.
    """

    def __init__(self, max_length: int, *, min_length: int = 0, seed: Any = None) -> None:
        super().__init__(max_length, min_length=min_length, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"FreeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, FreeText) and (self.min_length, self.max_length) == (
            other.min_length,
            other.max_length,
        )
