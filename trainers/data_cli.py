"""``clarify data ambigqa --out DIR``: AmbigQA from the Hugging Face hub as the JSON Lines the
``ambigqa`` task source reads (``DIR/train.jsonl``, ``DIR/dev.jsonl``), which the paper-scale
configs point at.

The download (``datasets.load_dataset("sewon/ambig_qa", "light")``) needs the hub; ``--rows FILE``
converts rows in the hub's own format read from a local JSON Lines file instead (what the tests do).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable

HUB_DATASET = ("sewon/ambig_qa", "light")
SPLITS = {"train": "train", "validation": "dev"}  # hub split -> file name


def write_records(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Convert hub rows into ``path`` (atomically: a killed conversion leaves no half file); the count."""
    from clarify_env.sources.ambigqa import record_from_hub_row

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(record_from_hub_row(row), ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def hub_rows(split: str) -> Iterable[dict[str, Any]]:
    """The hub's rows of one split (the one step that needs the network)."""
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise ImportError("clarify data needs `datasets`: pip install -e '.[data]'") from e
    return load_dataset(*HUB_DATASET, split=split)


def local_rows(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _run(args: argparse.Namespace) -> int:
    from clarify_env.sources import load_ambigqa

    out = Path(args.out)
    sources = (
        {"dev": local_rows(Path(args.rows))} if args.rows else {name: hub_rows(split) for split, name in SPLITS.items()}
    )
    for name, rows in sources.items():
        path = out / f"{name}.jsonl"
        count = write_records(rows, path)
        tasks = load_ambigqa(path)  # the converted file loads: every record is a task
        ambiguous = sum(t.is_ambiguous for t in tasks)
        print(f"wrote {path}: {count} questions, {ambiguous} of them ambiguous")
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="convert a public dataset into task files (ambigqa: AmbigQA from the hub)")
    p.add_argument("dataset", choices=["ambigqa"], help="the dataset")
    p.add_argument("--out", required=True, help="the folder for train.jsonl and dev.jsonl")
    p.add_argument(
        "--rows", default=None, help="convert hub-format rows from this local JSON Lines file (as dev.jsonl)"
    )
    p.set_defaults(func=_run)
