"""``clarify sweep``: several ReST runs of one config, then a comparison of their final policies.

::

    clarify sweep configs/quickstart.yaml [overrides ...] \\
        --runs narrow='env.costs={uniform: {question: {low: 0, high: 0.3}, word: {low: 0, high: 0.03}}}' \\
               wide=env.costs=default:train \\
        --seeds 0,1,2 [--resume]

Each run is ``NAME=override[,override...]`` (commas inside braces or brackets do not
split); the overrides before ``--runs`` apply to every run. Run ``NAME`` with seed ``k``
lives in ``<run_dir>/<NAME>-seed<k>``; ``<run_dir>/sweep/`` gets ``sweep.md``,
``sweep.csv``, ``sweep.json`` (one row per run: the final evaluation's mean metrics per
split and its steerability correlations) and ``sweep.png``. ``--resume`` continues a
killed sweep: finished runs are skipped, a killed one resumes from its last stage.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainers.config import ConfigError, RunConfig
from trainers.config_loading import load_config, parse_override
from trainers.eval_metrics import STEERABILITY
from trainers.eval_report import SUMMARIZED, EvalReport
from trainers.evaluate import split_specs
from trainers.rest import run_rest
from trainers.stages import DONE, prepare_run_dir

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
RESERVED = ("run_dir", "seed")  # set by the sweep for each run


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its name, seed, overrides and resolved config."""

    name: str
    seed: int
    overrides: tuple[str, ...]
    config: RunConfig

    @property
    def label(self) -> str:
        return Path(self.config.run_dir).name


def parse_run(text: str) -> tuple[str, list[str]]:
    """``NAME=override[,override...]`` -> (NAME, overrides); a bare ``NAME`` has none."""
    name, _, rest = text.partition("=")
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"--runs {text!r}: a run is NAME=override[,override...] with NAME of letters, digits, '-' and '_' "
            "(config overrides for every run go before --runs)"
        )
    overrides = split_specs(rest)
    for override in overrides:
        key = ".".join(parse_override(override)[0])
        if key in RESERVED:
            raise ConfigError(f"--runs {text!r}: {key} is set by the sweep (use --seeds, and the config's run_dir)")
    return name, overrides


def plan_runs(
    config: str | Path, common: Sequence[str], runs: Sequence[str], seeds: Sequence[int] | None
) -> tuple[Path, list[SweepRun]]:
    """The sweep's directory and its runs (every run with every seed; the config's seed if none given)."""
    base = load_config(config, common)
    if base.rest.iterations == 0 and not base.rest.bc.enabled:
        raise ConfigError("a sweep compares final evaluations: set rest.iterations > 0 or enable rest.bc")
    parsed = [parse_run(r) for r in runs] or [("base", [])]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"--runs: run names must be unique, got {names}")
    root = Path(base.run_dir)
    planned = []
    for name, overrides in parsed:
        for seed in seeds if seeds else [base.seed]:
            cfg = load_config(config, [*common, *overrides, f"seed={seed}", f"run_dir={root / f'{name}-seed{seed}'}"])
            planned.append(SweepRun(name, seed, tuple(overrides), cfg))
    return root, planned


def final_eval_dir(cfg: RunConfig) -> Path:
    """Where a run's last evaluation goes (the last iteration's, or the starting policy's without iterations)."""
    stage = f"iter-{cfg.rest.iterations}" if cfg.rest.iterations > 0 else "bc" if cfg.rest.bc.enabled else "start"
    return Path(cfg.run_dir) / stage / "eval"


def finished(cfg: RunConfig) -> bool:
    """True when the run's last evaluation and its summary are written."""
    return (final_eval_dir(cfg) / DONE).exists() and (Path(cfg.run_dir) / "summary.md").exists()


def run_sweep(root: Path, runs: Sequence[SweepRun], resume: bool = False) -> Path:
    """Run (or resume) every run, then write the comparison to ``root/sweep``; returns that folder."""
    if not resume:
        taken = [str(r.config.run_dir) for r in runs if (Path(r.config.run_dir) / "config.yaml").exists()]
        if taken:
            raise ConfigError(f"{', '.join(taken)} already hold runs: pass --resume to continue the sweep")
    for i, run in enumerate(runs, 1):
        if resume and finished(run.config):
            prepare_run_dir(run.config, resume=True)  # a finished run must still match its config
            print(f"[sweep] {run.label}: finished, skipped ({i}/{len(runs)})")
            continue
        print(f"[sweep] {run.label} ({i}/{len(runs)}): {' '.join(run.overrides) or 'the config as is'}")
        run_rest(run.config, resume=resume)
    return write_comparison(root / "sweep", runs)


# --- the comparison ------------------------------------------------------------------------------


def final_report(cfg: RunConfig) -> EvalReport:
    """A run's last evaluation, read back from its eval.json."""
    return EvalReport.read(final_eval_dir(cfg) / "eval.json")


def comparison_rows(runs: Sequence[SweepRun]) -> list[dict[str, Any]]:
    """One row per run: name, seed, overrides, then the final evaluation's summary metrics
    (``<split>/<metric>``) and the policy's steerability correlations (None where undefined)."""
    rows = []
    for run in runs:
        report = final_report(run.config)
        summary = {k: v for k, v in report.summary().items() if not k.startswith("steerability/")}
        oracle = {
            f"{s}/oracle_reward": float(np.mean([p.oracle_reward for p in report.points if p.split == s]))
            for s in dict.fromkeys(p.split for p in report.points)
        }
        steer = {f"steerability/{k}": report.steerability[k]["policy"] for k in STEERABILITY}
        rows.append(
            {
                "run": run.name,
                "seed": run.seed,
                "overrides": " ".join(run.overrides),
                "run_dir": str(run.config.run_dir),
                **summary,
                **oracle,
                **steer,
            }
        )
    return rows


def write_comparison(out: Path, runs: Sequence[SweepRun]) -> Path:
    """``sweep.json``, ``sweep.csv``, ``sweep.md`` and ``sweep.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(runs)
    split = runs[0].config.eval.splits[0]  # the split the plot shows (the config's first, e.g. held-out prices)
    (out / "sweep.json").write_text(json.dumps({"plotted_split": split, "runs": rows}, indent=2))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "sweep.md").write_text(markdown(rows, split))
    plot(rows, split, out / "sweep.png")
    print(f"[sweep] wrote {out}/sweep.md, sweep.csv, sweep.json, sweep.png")
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "undefined"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict[str, Any]], split: str) -> str:
    """One table row per run on ``split``: reward, oracle, regret, agreement, move rates, steerability."""
    metrics = ["reward", "oracle_reward", *(m for m in SUMMARIZED if m != "move_regret" and m != "reward")]
    steer = [f"steerability/{k}" for k in STEERABILITY]
    head = ["run", "seed", "overrides", *metrics, *(k.split("/")[1] for k in steer)]
    lines = [f"# Sweep: final policies on {split}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        overrides = f"`{r['overrides']}`" if r["overrides"] else ""
        cells = [r["run"], r["seed"], overrides, *(r.get(f"{split}/{m}") for m in metrics), *(r[k] for k in steer)]
        lines.append("| " + " | ".join(map(_cell, cells)) + " |")
    lines += [
        "",
        "Steerability: Spearman rho of the policy across the evaluation's price points "
        "(undefined where a rate does not vary). All splits' metrics are in sweep.csv and sweep.json.",
        "",
    ]
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], split: str, path: Path) -> Path:
    """Three panels, one bar per run name (the mean over seeds; a dot per seed): reward on
    ``split`` (with the oracle's as a tick), agreement with the oracle, steerability correlations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["run"] for r in rows))
    x = np.arange(len(names))

    def values(name: str, key: str) -> list[float]:
        return [float(r[key]) for r in rows if r["run"] == name and r.get(key) is not None]

    def mean(name: str, key: str) -> float:
        found = values(name, key)
        return float(np.mean(found)) if found else np.nan  # NaN: no bar

    fig, axes = plt.subplots(1, 3, figsize=(5 * 3, 3.8))
    for ax, key, title in ((axes[0], "reward", f"reward ({split})"), (axes[1], "oracle_agreement", "oracle agreement")):
        ax.bar(x, [mean(n, f"{split}/{key}") for n in names], color="tab:blue", alpha=0.7)
        for i, n in enumerate(names):
            dots = values(n, f"{split}/{key}")
            ax.plot([i] * len(dots), dots, "k.", ms=6)
        ax.set_title(title)
    oracle = [mean(n, f"{split}/oracle_reward") for n in names]
    axes[0].plot(x, oracle, "_", color="black", ms=30, mew=2, label="oracle")
    axes[0].legend(fontsize=7)
    axes[1].set_ylim(0, 1.05)
    width = 0.8 / len(STEERABILITY)
    for j, name in enumerate(STEERABILITY):
        offset = (j - (len(STEERABILITY) - 1) / 2) * width
        axes[2].bar(x + offset, [mean(n, f"steerability/{name}") for n in names], width, label=name)
    axes[2].axhline(0, color="black", lw=0.8)
    axes[2].set_ylim(-1.05, 1.05)
    axes[2].set_title("steerability (Spearman rho; no bar: undefined)")
    axes[2].legend(fontsize=6)
    for ax in axes:
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- command line ----------------------------------------------------------------------------


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, got {text!r}") from None


def _run(args: argparse.Namespace) -> int:
    root, runs = plan_runs(args.config, args.overrides, args.runs, args.seeds)
    run_sweep(root, runs, resume=args.resume)
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="several ReST runs (e.g. training prices x seeds) and a comparison table and plot")
    p.add_argument("config", help="run config YAML shared by the runs")
    p.add_argument("overrides", nargs="*", help="config overrides for every run (before --runs)")
    p.add_argument(
        "--runs",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=OVERRIDE[,OVERRIDE...]",
        help="the runs, each a name and its overrides, e.g. cheap-q='env.costs={question: 0.05, word: 0.02}'",
    )
    p.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        help="comma-separated seeds, each run once per seed (default: the config's seed)",
    )
    p.add_argument("--resume", action="store_true", help="continue a killed sweep: finished runs are skipped")
    p.set_defaults(func=_run)
