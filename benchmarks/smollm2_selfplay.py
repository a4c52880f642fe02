"""SmolLM2-135M-Instruct self-play on CPU at two price settings: move mix and mean reward.

    python benchmarks/smollm2_selfplay.py [--config configs/rollout_smollm2.yaml] [--episodes 200] [key.sub=value ...]

The prompted model plays the assistant and the user (LLMUser), as the config says
(compact prompt, three worked examples as earlier chat turns, stopped at a newline), on the same
synthetic tasks at two prices: questions cheap and words dear, then questions dear and
words free. ``--episodes`` are split evenly between the two. Beside each row, the oracle
(``OraclePolicy`` with the scripted user) on the same episodes shows the best move mix.
The mission's reference point: a prompted model barely changes its moves with the prices.

Prints a table and writes benchmarks/results/smollm2_selfplay.json; the episodes go to
``<run_dir>/episodes-<setting>.jsonl`` (rewritten on every run).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from agents.baselines import OraclePolicy
from agents.scripted_user import ScriptedUser
from trainers.config_loading import load_config
from trainers.models import load_policy_model, make_agents, make_backend, run_rules
from trainers.rollout import RolloutEngine, env_kwargs, format_summary, summarize

RESULTS = Path(__file__).parent / "results"
SETTINGS = {
    "questions_cheap": {"question": 0.05, "word": 0.05},
    "questions_dear": {"question": 0.5, "word": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/rollout_smollm2.yaml")
    parser.add_argument("--episodes", type=int, default=200, help="episodes in all, split between the settings")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. model.backend=transformers")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    torch.manual_seed(cfg.seed)

    start = time.perf_counter()
    backend = make_backend(cfg.model, load_policy_model(cfg))
    startup = time.perf_counter() - start
    assistant, user = make_agents(cfg, backend)
    per_setting = args.episodes // len(SETTINGS)
    rows = []
    for name, costs in SETTINGS.items():
        env = env_kwargs(replace(cfg, env=replace(cfg.env, costs=costs)))
        out = Path(cfg.run_dir) / f"episodes-{name}.jsonl"
        out.unlink(missing_ok=True)
        engine = RolloutEngine(
            env,
            assistant,
            user,
            num_envs=cfg.rollout.num_envs,
            samples_per_group=cfg.rollout.samples_per_group,
            seed=cfg.seed,
        )
        leaks_before = user.leaks_blocked
        policy = summarize(engine.run(per_setting, out_path=out))
        oracle = summarize(
            RolloutEngine(
                env,
                OraclePolicy(run_rules(cfg)),
                ScriptedUser(),
                samples_per_group=cfg.rollout.samples_per_group,
                seed=cfg.seed,
            ).run(per_setting, progress=False)
        )
        rows.append(
            {
                "setting": name,
                "costs": costs,
                "policy": policy,
                "oracle": oracle,
                "leaks_blocked": user.leaks_blocked - leaks_before,
                "seconds": engine.stats.seconds,
                **engine.stats.rates(),
            }
        )

    print(f"\nbackend {cfg.model.backend}, started in {startup:.0f} s")
    print(
        f"{'setting':<16} {'who':<7} {'ANSWER':>7} {'MULTI':>6} {'CLARIFY':>8} {'ERROR':>6} {'reward':>7} {'seconds':>8}"
    )
    for r in rows:
        for who in ("policy", "oracle"):
            s, mix = r[who], r[who]["move_mix"]
            seconds = f"{r['seconds']:>8.0f}" if who == "policy" else ""
            print(
                f"{r['setting']:<16} {who:<7} {mix['ANSWER']:>7.0%} {mix['MULTI']:>6.0%} {mix['CLARIFY']:>8.0%} "
                f"{mix['ERROR']:>6.0%} {s['mean_reward']:>7.3f} {seconds}"
            )
        print(
            f"  {r['setting']}: {format_summary(r['policy'])}; {r['tokens_per_s']:.0f} tokens/s, "
            f"{r['leaks_blocked']} user leaks blocked"
        )
    RESULTS.mkdir(exist_ok=True)
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "backend": cfg.model.backend,
        "startup_seconds": startup,
        "rows": rows,
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
    }
    (RESULTS / "smollm2_selfplay.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'smollm2_selfplay.json'}")


if __name__ == "__main__":
    main()
