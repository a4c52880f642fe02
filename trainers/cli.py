"""The ``clarify`` command line: each sub-command lives in its own module, which defines
``add_cli(subparsers)`` registering its parser with ``func`` set to a handler returning
an exit code."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

COMMAND_MODULES = [
    "trainers.play",
    "trainers.fetch_cli",
    "trainers.sft",
    "trainers.evaluate",
    "trainers.rollout_cli",
    "trainers.rest",
    "trainers.sweep",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clarify", description="Train and benchmark assistants that ask, enumerate or answer at a price."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `key=value` overrides after an option (`clarify train CONFIG --resume a.b=1`) still count
        if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
