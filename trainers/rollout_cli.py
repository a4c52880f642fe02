"""``clarify rollout``: play episodes from a run config, stream them to JSONL, print the move mix."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainers.config_loading import add_config_arguments, config_from_args, save_config
from trainers.rollout import engine_from_config, format_summary, summarize


def _run(args: argparse.Namespace) -> int:
    import torch

    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path(cfg.run_dir) / "episodes.jsonl"
    save_config(cfg, Path(cfg.run_dir) / "rollout_config.yaml")
    torch.manual_seed(cfg.seed)  # sampled decoding on transformers draws from torch's generator
    engine = engine_from_config(cfg)
    episodes = engine.run(args.episodes or cfg.rollout.episodes, out_path=out, progress=not args.quiet)
    summary = summarize(episodes)
    print(format_summary(summary))
    rates = engine.stats.rates()
    print(
        f"this call: {engine.stats.episodes} new episodes in {engine.stats.seconds:.1f} s "
        f"({rates['episodes_per_s']:.2f} episodes/s, {rates['tokens_per_s']:.0f} tokens/s); episodes in {out}"
    )
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps({**summary, **rates}, indent=2))
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollout", help="play self-play episodes with the configured model and write them as JSONL")
    add_config_arguments(p)
    p.add_argument("--episodes", type=int, default=None, help="episodes to play (default: rollout.episodes)")
    p.add_argument("--out", default=None, help="episode file (default: <run_dir>/episodes.jsonl); resumes if it exists")
    p.add_argument("--summary-json", default=None, help="also write the move mix and rates to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
