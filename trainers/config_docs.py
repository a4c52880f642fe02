"""Generate ``docs/configuration.md`` from the config dataclasses: ``python -m trainers.config_docs``.

A test compares the file with ``reference()``, so the page cannot go stale.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

from trainers.config import RunConfig

OUT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _type(tp: Any) -> str:
    text = str(tp) if not isinstance(tp, type) else tp.__name__
    return text.replace("typing.", "").replace("NoneType", "None").replace("|", "\\|")


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return ""
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def _sections(cls: type, prefix: str = "") -> list[tuple[str, type, list[tuple[str, str, str, str]]]]:
    """(section name, class, rows) for ``cls`` and every nested section, depth first."""
    hints = typing.get_type_hints(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            nested.append((f"{key}.", hints[f.name]))
            continue
        rows.append((key, _type(hints[f.name]), _default(f), f.metadata.get("doc", "").replace("|", "\\|")))
    out = [(prefix.rstrip(".") or "run", cls, rows)] if rows else []
    for sub_prefix, sub in nested:
        out += _sections(sub, sub_prefix)
    return out


def reference() -> str:
    """The configuration reference as markdown: one table per section."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the dataclasses in `trainers/config.py` by `python -m trainers.config_docs`; do not edit.",
        "A run config is YAML with these sections; any key can be overridden on the command line as",
        "`key.sub=value` (a YAML value). Unknown keys, wrong types and out-of-range values are errors naming",
        "the key, raised before anything runs.",
        "",
    ]
    for name, cls, rows in _sections(RunConfig):
        doc = " ".join((cls.__doc__ or "").split())
        lines += [f"## `{name}`", "", doc, "", "| key | type | default | what it does |", "|---|---|---|---|"]
        lines += [f"| `{key}` | {tp} | {default} | {doc} |" for key, tp, default, doc in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(reference())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
