"""Task-source and cost specs as written on a command line."""

from __future__ import annotations

import json
from typing import Any


def parse_cli_spec(text: str) -> Any:
    """A spec given as text: JSON when it looks like JSON (starts with ``{`` or ``[``), else the
    plain string (a name such as ``"synthetic"`` or ``"default:heldout"``). Malformed JSON is a
    ``ValueError`` naming the text, never silently taken for a name."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return stripped
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as e:
        raise ValueError(f"spec {text!r} is not valid JSON: {e.msg} at character {e.pos}") from e
