"""Expected reward of the oracle and of every fixed baseline over a grid of prices.

    python benchmarks/oracle_vs_baselines.py [--tasks 500]

For each price point and each synthetic task, each deterministic policy's expected reward
is computed exactly (prior-weighted over the user's hidden meanings, each played through
the env with the scripted user); the random mixture's is the weighted mean of the fixed
policies'. Prints a table, writes benchmarks/results/oracle_vs_baselines.{json,png}, and
exits non-zero if a baseline beats the oracle anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from agents import AlwaysAnswer, AlwaysClarify, AlwaysMulti, OraclePolicy
from clarify_env.costs import Costs
from clarify_env.env import ClarifyEnv
from trainers.eval_metrics import policy_expectation

RESULTS = Path(__file__).parent / "results"
QUESTION_PRICES = (0.0, 0.05, 0.15, 0.3, 0.5, 0.8)
WORD_PRICES = (0.0, 0.005, 0.015, 0.03, 0.06, 0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env = ClarifyEnv(source="synthetic")
    tasks = []
    for i in range(args.tasks):
        env.reset(seed=args.seed + i)
        tasks.append(env.task)
    policies = {
        "oracle": OraclePolicy(),
        "always_answer": AlwaysAnswer(),
        "always_multi": AlwaysMulti(),
        "always_clarify": AlwaysClarify(),
    }
    rows, failures = [], []
    for q in QUESTION_PRICES:
        for w in WORD_PRICES:
            costs = Costs(q, w)
            means = {
                name: float(np.mean([policy_expectation(env, p, t, costs)[0] for t in tasks]))
                for name, p in policies.items()
            }
            means["random_mixture"] = float(
                np.mean([means["always_answer"], means["always_multi"], means["always_clarify"]])
            )
            best_baseline = max(v for k, v in means.items() if k != "oracle")
            if means["oracle"] < best_baseline - 1e-9:
                failures.append((q, w))
            rows.append({"question": q, "word": w, **means})
    names = list(rows[0])[2:]
    print(f"{'alpha':>6} {'beta':>6} " + " ".join(f"{n:>15}" for n in names))
    for r in rows:
        print(f"{r['question']:>6.2f} {r['word']:>6.3f} " + " ".join(f"{r[n]:>15.4f}" for n in names))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "oracle_vs_baselines.json").write_text(json.dumps({"tasks": args.tasks, "rows": rows}, indent=2))
    plot(rows, names, RESULTS / "oracle_vs_baselines.png")
    print(f"wrote {RESULTS / 'oracle_vs_baselines.json'} and .png")
    if failures:
        print(f"FAIL: a baseline beats the oracle at {failures}")
        return 1
    print("oracle >= every baseline at every price point")
    return 0


def plot(rows: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, fixed_key, fixed in ((axes[0], "question", "word", 0.015), (axes[1], "word", "question", 0.15)):
        sel = [r for r in rows if r[fixed_key] == fixed]
        for n in names:
            ax.plot([r[key] for r in sel], [r[n] for r in sel], marker="o", label=n, lw=2.5 if n == "oracle" else 1.2)
        ax.set_xlabel(f"price of a {key}")
        ax.set_ylabel("expected reward")
        ax.set_title(f"{fixed_key} price = {fixed}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
