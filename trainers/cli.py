"""The ``clarify`` command line: each sub-command lives in its own module, which defines
``add_cli(subparsers)`` registering its parser with ``func`` set to a handler returning
an exit code. Every command takes its config the same way: ``CONFIG [key.sub=value ...]``.

A user error (a config, a data file, a missing or damaged file) prints one line and exits
with code 2; ``--debug`` (or ``CLARIFY_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Sequence

COMMAND_MODULES = [
    "trainers.play",
    "trainers.fetch_cli",
    "trainers.sft.cli",
    "trainers.evaluate",
    "trainers.rollout_cli",
    "trainers.rest",
    "trainers.sweep",
    "trainers.audit",
    "trainers.compare",
    "trainers.data_cli",
]
USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clarify", description="Train and benchmark assistants that ask, enumerate or answer at a price."
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that are the user's to fix: bad config, data, files; each names its problem."""
    from agents.openai_backend import ServerError
    from clarify_env.costs import CostSpecError
    from clarify_env.scoring import RulesError
    from clarify_env.tasks import TaskError
    from trainers.config import ConfigError
    from trainers.sft.checkpoints import CheckpointError
    from trainers.stages import StageError

    return (
        ConfigError,
        ServerError,
        TaskError,
        CostSpecError,
        RulesError,
        StageError,
        CheckpointError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        ValueError,
    )


def foreign_agents_package() -> str | None:
    """Where Python finds the top-level package ``agents`` when it is not clarify-env's (None when it
    is). The name is also owned by openai-agents, which verifiers' default install pulls in."""
    ours = Path(__file__).resolve().parent.parent / "agents" / "__init__.py"
    spec = importlib.util.find_spec("agents")
    origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    if origin is not None and origin == ours and "__clarify_env__" in origin.read_text(encoding="utf-8"):
        return None
    return str(origin) if origin is not None else "nowhere"


def main(argv: Sequence[str] | None = None) -> int:
    foreign = foreign_agents_package()
    if foreign is not None:
        print(
            f"clarify: error: the package `agents` Python imports is {foreign}, not clarify-env's: another "
            "distribution owns the same name (openai-agents, which `pip install verifiers` pulls in). "
            '`pip uninstall openai-agents`; install verifiers with --no-deps (docs/benchmark-your-model.md, "From verifiers")',
            file=sys.stderr,
        )
        return USER_ERROR
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `key=value` overrides after an option (`clarify train CONFIG --resume a.b=1`) still count
        if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    debug = args.debug or os.environ.get("CLARIFY_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if debug:
            raise
        print(f"clarify {args.command}: error: {e} (--debug for the traceback)", file=sys.stderr)
        return USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
