"""How robust is one ReST improve stage? Re-run it on the same grown episodes with other
settings or SFT seeds.

    python experiments/improve_robustness.py --source runs/quickstart --out-dir runs/robust \\
        --variant "w5 sft.move_tag_weight=5" --variant "w5_wd sft.move_tag_weight=5 sft.weight_decay=0.1" \\
        --sft-seeds 0 1 2 [--config configs/quickstart.yaml] [--episodes-per-point 300] [--base "k=v ..."]

``--source`` is a finished (or at least grown) run of ``--config``: its behaviour-cloning stage
(``bc/``) and ``iter-1/grow.jsonl`` are copied into ``<out-dir>/<variant>-s<seed>``, so each
trial redoes only filter, improve (``sft.seed=<seed>`` plus the variant's overrides) and the
final evaluation (``rest.final_episodes_per_point``). Pass the overrides the source run was
made with in ``--base`` (they must not change behaviour cloning or the grow). A finished trial
is read back, not re-run. Prints one row per trial (held-out reward / oracle, first-move
agreement, the held-out rank correlations, held-out points below a fixed baseline, wall
time) and writes experiments/results/<--out> (default improve_robustness.json).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _rho(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def heldout_summary(eval_json: Path) -> dict:
    """The bars' numbers at the held-out points of one final evaluation."""
    from trainers.eval_report import EvalReport, beaten_by  # noqa: PLC0415 (import after argparse: fast --help)

    report = EvalReport.read(eval_json)
    split = next(s for s in report.split_steerability() if s.endswith("heldout"))
    points = [p for p in report.points if p.split == split]
    rho = report.split_steerability()[split]
    n = sum(p.n for p in points)
    return {
        "episodes": n,
        "reward_over_oracle": float(np.mean([p.reward for p in points]) / np.mean([p.oracle_reward for p in points])),
        "agreement": float(sum(p.oracle_agreement * p.n for p in points) / n),
        "clarify_rho": rho["clarify_rate_vs_question_price"]["policy"],
        "multi_rho": rho["multi_rate_vs_word_price"]["policy"],
        "below_baseline": [f"a={p.question:g} b={p.word:g} {name}" for p in points for name in beaten_by(p)],
    }


def run_trial(args: argparse.Namespace, name: str, overrides: list[str], seed: int) -> dict:
    out = Path(args.out_dir) / f"{name}-s{seed}"
    eval_json = out / "iter-1" / "eval" / "eval.json"
    if not eval_json.exists():
        source = Path(args.source)
        if not (source / "bc" / "done.json").exists() or not (source / "iter-1" / "grow.jsonl").exists():
            sys.exit(f"{source}: needs a finished behaviour-cloning stage (bc/) and iter-1/grow.jsonl")
        shutil.rmtree(out, ignore_errors=True)
        (out / "iter-1").mkdir(parents=True)
        shutil.copytree(source / "bc", out / "bc")
        shutil.copytree(source / "tiny-model", out / "tiny-model")
        shutil.copy(source / "iter-1" / "grow.jsonl", out / "iter-1" / "grow.jsonl")
        command = [
            "clarify",
            "train",
            args.config,
            f"run_dir={out}",
            "rest.iterations=1",
            "wandb.enabled=false",
            f"rest.final_episodes_per_point={args.episodes_per_point}",
            *shlex.split(args.base),
            f"sft.seed={seed}",
            *overrides,
        ]
        print("$", shlex.join(command), flush=True)
        started = time.time()
        with open(out.with_suffix(".log"), "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        (out / "wall_seconds.txt").write_text(f"{time.time() - started:.0f}\n")
    row = {"variant": name, "overrides": overrides, "sft_seed": seed, **heldout_summary(eval_json)}
    wall = out / "wall_seconds.txt"
    row["wall_seconds"] = float(wall.read_text()) if wall.exists() else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--source", required=True, help="a run directory with a finished bc stage and iter-1/grow.jsonl"
    )
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--variant", action="append", required=True, help='"NAME key=value ..." (may repeat)')
    parser.add_argument("--sft-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes-per-point", type=int, default=300)
    parser.add_argument("--base", default="", help="overrides the source run was made with")
    parser.add_argument("--out", default="improve_robustness.json")
    args = parser.parse_args()

    rows = []
    for spec in args.variant:
        name, *overrides = shlex.split(spec)
        for seed in args.sft_seeds:
            rows.append(run_trial(args, name, overrides, seed))
            r = rows[-1]
            print(
                f"{name:>16} seed {seed}: reward/oracle {r['reward_over_oracle']:.4f}  agreement {r['agreement']:.3f}  "
                f"rho clarify {_rho(r['clarify_rho'])} multi {_rho(r['multi_rho'])}  below {len(r['below_baseline'])}",
                flush=True,
            )
    print(
        "\n| variant | sft seed | reward / oracle | agreement | clarify rho vs alpha | multi rho vs beta | below a baseline | wall |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        wall = f"{r['wall_seconds']:.0f} s" if r["wall_seconds"] else "-"
        print(
            f"| {r['variant']} | {r['sft_seed']} | {r['reward_over_oracle']:.4f} | {r['agreement']:.3f} | "
            f"{_rho(r['clarify_rho'])} | {_rho(r['multi_rho'])} | {len(r['below_baseline'])} | {wall} |"
        )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / args.out
    path.write_text(
        json.dumps({"source": args.source, "config": args.config, "base": args.base, "trials": rows}, indent=2)
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
