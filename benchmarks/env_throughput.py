"""Episodes and steps per second of the env with scripted agents on synthetic tasks (one core).

    python benchmarks/env_throughput.py [--episodes 20000]

Prints a table and writes benchmarks/results/env_throughput.json. Target: >= 5,000 full
episodes per second, so the env is never the bottleneck of training.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import gymnasium as gym

import clarify_env  # noqa: F401
from agents import AlwaysAnswer, AlwaysClarify, AlwaysMulti, OraclePolicy
from clarify_env.env import ClarifyEnv

RESULTS = Path(__file__).parent / "results"


def measure(env, policy, episodes: int) -> dict:
    steps = 0
    start = time.perf_counter()
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(policy.act(obs))
            steps += 1
            done = terminated or truncated
    elapsed = time.perf_counter() - start
    return {
        "episodes": episodes,
        "seconds": elapsed,
        "episodes_per_s": episodes / elapsed,
        "steps_per_s": steps / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20_000)
    args = parser.parse_args()
    rows = []
    for wrapper in ("ClarifyEnv", "gym.make"):
        for policy in (OraclePolicy(), AlwaysAnswer(), AlwaysMulti(), AlwaysClarify()):
            env = ClarifyEnv(source="synthetic", costs="default:train")
            if wrapper == "gym.make":
                env = gym.make("clarify_env/Clarify-v0", source="synthetic", costs="default:train")
            rows.append({"env": wrapper, "policy": policy.name, **measure(env, policy, args.episodes)})
    print(f"{'env':<11} {'policy':<15} {'episodes/s':>11} {'steps/s':>10}")
    for r in rows:
        print(f"{r['env']:<11} {r['policy']:<15} {r['episodes_per_s']:>11,.0f} {r['steps_per_s']:>10,.0f}")
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(), "rows": rows}
    (RESULTS / "env_throughput.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'env_throughput.json'}")


if __name__ == "__main__":
    main()
