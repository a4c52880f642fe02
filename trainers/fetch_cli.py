"""``clarify fetch-model``: get a known model into the local cache and print its path."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from agents.model_fetch import fetch_model

    print(fetch_model(args.name, cache_dir=args.cache_dir))
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch-model", help="fetch a known model (smollm2-135m-instruct, gemma3-270m) and print its local path"
    )
    p.add_argument("name", help="smollm2-135m-instruct or gemma3-270m (the base model)")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where to keep converted models (default: $CLARIFY_CACHE or ~/.cache/clarify-env/models)",
    )
    p.set_defaults(func=_run)
