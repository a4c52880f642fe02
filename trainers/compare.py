"""``clarify compare``: a steerability leaderboard — several policies at the same price points.

    clarify compare CONFIG --policies oracle always_multi runs/quickstart openai:NAME@URL [--out DIR]

Each policy (``trainers.policies``: scripted, served, a run directory, an adapter) is evaluated
on the same tasks at the same prices (``eval.splits``, ``eval.episodes_per_point``; a finished
policy's evaluation is read back, so a killed comparison resumes). ``DIR`` gets one folder per
policy (its full evaluation) and ``compare.md``, ``compare.csv``, ``compare.json`` — per policy:
reward with its 95% CI, the oracle's, regret, first-move agreement, the three move rates,
Spearman rho of the clarify rate with the question price and of the multi rate with the word
price, requests, tokens and cost — and ``compare.png``: each move rate against each price, one
line per policy, the oracle's dashed. The first policy is also set against every other point by
point on the same episodes (``trainers.paired``: ``compare_points.md`` and ``.json``), the test
of whether it beats each baseline at each price.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainers.config import RunConfig
from trainers.config_loading import add_config_arguments, config_from_args
from trainers.eval_metrics import sweeps_along
from trainers.eval_report import EvalReport

RATES = ("clarify_rate", "multi_rate", "answer_rate")


def evaluate_all(
    cfg: RunConfig, specs: Sequence[str], out: Path, tokenizer: str | None = None, progress: bool = True
) -> list[EvalReport]:
    """Each policy's evaluation (read back where it finished before)."""
    from trainers.evaluate import evaluate_spec
    from trainers.policies import policy_name

    reports = []
    for spec in specs:
        folder = out / policy_name(spec)
        done = (folder / "eval.json").exists()
        reports.append(
            EvalReport.read(folder / "eval.json")
            if done
            else evaluate_spec(spec, cfg, folder, tokenizer, progress=progress)
        )
    return reports


def leaderboard_rows(reports: Sequence[EvalReport]) -> list[dict[str, Any]]:
    """One row per policy: means over its points, the rank correlations, and what generating cost."""
    rows = []
    for report in reports:
        p = report.points
        n = sum(x.n for x in p)
        row: dict[str, Any] = {
            "policy": report.policy,
            "points": len(p),
            "episodes": n,
            "reward": float(np.mean([x.reward for x in p])),
            "reward_ci_low": float(np.mean([x.reward_ci_low for x in p])),
            "reward_ci_high": float(np.mean([x.reward_ci_high for x in p])),
            "oracle_reward": float(np.mean([x.oracle_reward for x in p])),
            "regret": float(np.mean([x.regret for x in p])),
            "oracle_agreement": sum(x.oracle_agreement * x.n for x in p) / n,
            **{rate: float(np.mean([getattr(x, rate) for x in p])) for rate in RATES},
            "rho_clarify_vs_question": report.steerability["clarify_rate_vs_question_price"]["policy"],
            "rho_multi_vs_word": report.steerability["multi_rate_vs_word_price"]["policy"],
        }
        for key in ("requests", "cached", "prompt_tokens", "completion_tokens", "cost"):
            row[key] = sum(u.get(key, 0) for u in report.usage.values())
        rows.append(row)
    return sorted(rows, key=lambda r: -r["reward"])


def _cell(value: Any) -> str:
    if value is None:
        return "undefined"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict[str, Any]], splits: Sequence[str]) -> str:
    head = [
        "policy",
        "reward [95% CI]",
        "oracle",
        "regret",
        "agree",
        "clarify",
        "multi",
        "answer",
        "rho clarify~alpha",
        "rho multi~beta",
        "requests (cached)",
        "tokens",
        "cost",
    ]
    lines = [
        f"# Steerability leaderboard ({', '.join(splits)})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [
            r["policy"],
            f"{r['reward']:.3f} [{r['reward_ci_low']:.3f}, {r['reward_ci_high']:.3f}]",
            _cell(r["oracle_reward"]),
            _cell(r["regret"]),
            f"{r['oracle_agreement']:.2f}",
            *(f"{r[k]:.2f}" for k in RATES),
            _cell(r["rho_clarify_vs_question"]),
            _cell(r["rho_multi_vs_word"]),
            f"{r['requests']:.0f} ({r['cached']:.0f})",
            f"{r['prompt_tokens'] + r['completion_tokens']:.0f}",
            f"{r['cost']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Rewards and rates: means over the price points; the CI column averages the points' bootstrap "
        "95% intervals. rho: Spearman rank correlation along each price with the other held fixed.",
        "",
    ]
    return "\n".join(lines)


def plot(reports: Sequence[EvalReport], path: Path) -> Path:
    """Each move rate (columns) against each price (rows), one line per policy, the oracle's dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(RATES), figsize=(4.2 * len(RATES), 6.4), squeeze=False)
    for row, price in enumerate(("question", "word")):
        for col, rate in enumerate(RATES):
            ax = axes[row][col]
            for k, report in enumerate(reports):
                sweep = sweeps_along(report.points, price)[0] if report.points else []
                xs = [getattr(p, price) for p in sweep]
                ax.plot(xs, [getattr(p, rate) for p in sweep], marker="o", lw=1.6, label=report.policy)
                if k == 0:
                    ax.plot(xs, [getattr(p, f"oracle_{rate}") for p in sweep], ls="--", color="black", label="oracle")
            ax.set_xlabel(f"price of a {price}")
            ax.set_title(rate.replace("_", " "))
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_leaderboard(reports: Sequence[EvalReport], out: Path, splits: Sequence[str]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = leaderboard_rows(reports)
    paths = {
        "json": out / "compare.json",
        "markdown": out / "compare.md",
        "csv": out / "compare.csv",
        "plot": out / "compare.png",
    }
    paths["json"].write_text(json.dumps({"splits": list(splits), "policies": rows}, indent=2))
    paths["markdown"].write_text(markdown(rows, splits))
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(reports, paths["plot"])
    return paths


def _run(args: argparse.Namespace) -> int:
    # `--policies a b key=value`: the overrides after the policies are overrides all the same
    moved = [p for p in args.policies if "=" in p and not p.startswith("openai:") and not Path(p).exists()]
    args.overrides = [*args.overrides, *moved]
    args.policies = [p for p in args.policies if p not in moved]
    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path(cfg.run_dir) / "compare"
    reports = evaluate_all(cfg, args.policies, out, args.tokenizer, progress=not args.quiet)
    paths = write_leaderboard(reports, out, cfg.eval.splits)
    if len(reports) > 1:
        from trainers.paired import head_to_head, unpaired, write_head_to_head
        from trainers.policies import policy_name

        rows = head_to_head(reports, [out / policy_name(s) for s in args.policies], seed=cfg.seed)
        for other in unpaired(reports, rows):
            print(
                f"no paired verdict for {reports[0].policy} against {other}: their episodes are not the same "
                f"draws (another seed, task file or episode count; this comparison's seed is {cfg.seed})",
                file=sys.stderr,
            )
        paths.update(write_head_to_head(rows, out))
    print(paths["markdown"].read_text())
    if "points_markdown" in paths:
        print(paths["points_markdown"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="several policies at the same prices: one table and one plot")
    add_config_arguments(p)
    p.add_argument(
        "--policies",
        nargs="+",
        required=True,
        help="policy specs: oracle, always_multi, ..., a run directory, an adapter directory, base, openai:NAME[@URL]",
    )
    p.add_argument("--tokenizer", default=None, help="served policies: render prompts with this tokenizer")
    p.add_argument("--out", default=None, help="output dir (default: <run_dir>/compare)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
