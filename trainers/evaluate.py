"""Evaluation at fixed prices: play a policy at every point of the price grids, then score it
(``trainers.eval_metrics``) and write the report (``trainers.eval_report``).

    clarify eval CONFIG [--adapter DIR | --policy oracle|always_answer|...] [--split ...]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from agents.base import Agent
from agents.generation import GenerationBackend
from clarify_env.costs import Costs, grid_points
from clarify_env.scoring import Rules
from clarify_env.sources import make_source
from trainers.config import RunConfig
from trainers.config_loading import add_config_arguments, config_from_args
from trainers.episodes import read_episodes
from trainers.eval_metrics import DEFAULT_BASELINES, evaluate_episodes, task_lookup
from trainers.eval_report import EvalReport


def point_path(out: str | Path, split: str, costs: Costs) -> Path:
    """Where an evaluation in ``out`` keeps the episodes of one price point of ``split``."""
    return Path(out) / "episodes" / f"{split.replace(':', '-')}_q{costs.question:g}_w{costs.word:g}.jsonl"


def split_specs(text: str) -> list[str]:
    """``"default:heldout,{...JSON...}"`` -> its specs: commas inside braces or brackets do not split."""
    specs, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "{[") - (ch in "}]")
        if ch == "," and depth == 0:
            specs.append(current.strip())
            current = ""
        else:
            current += ch
    return [s for s in (*specs, current.strip()) if s]


def split_points(specs: Sequence[str]) -> dict[str, list[Costs]]:
    """Price points per split spec (``"default:heldout"``, or a JSON cost spec of a grid or a
    fixed point; ``clarify_env.costs.grid_points``)."""
    return {spec: grid_points(spec) for spec in specs}


def evaluate_policy(
    assistant: Agent,
    cost_points: Mapping[str, Sequence[Costs]],
    episodes_per_point: int | Mapping[str, int],
    env: Mapping[str, Any],
    seed: int,
    out_dir: str | Path,
    user: Agent | None = None,
    num_envs: int = 64,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    bootstrap_samples: int = 1000,
    policy_name: str | None = None,
    progress: bool = False,
    meters: Mapping[str, GenerationBackend] | None = None,
) -> EvalReport:
    """Play ``episodes_per_point`` episodes (one number, or one per split of ``cost_points``)
    at every price point with the rollout engine (the same tasks at every point: the task
    stream depends on ``seed`` alone), evaluate them and write the report to ``out_dir``
    (episode files in ``out_dir/episodes``: a killed evaluation resumes). ``env`` holds
    ``ClarifyEnv`` keyword arguments (``source``, ``rules``; its ``costs`` is replaced by each
    point); ``user`` defaults to the scripted user. ``meters`` names the backends whose ``usage``
    during the evaluation goes into the report (e.g. ``{"assistant": ..., "user": ...}``).
    """
    from agents.scripted_user import ScriptedUser
    from trainers.rollout import RolloutEngine

    user = user or ScriptedUser()
    out = Path(out_dir)
    before = {role: replace(b.usage) for role, b in (meters or {}).items()}
    spec = env.get("source", "synthetic")
    source = make_source(spec)  # built once: every env of every point shares it
    lookup, rules = task_lookup(source), Rules.of(env.get("rules"))
    points = []
    for split, grid in cost_points.items():
        count = episodes_per_point[split] if isinstance(episodes_per_point, Mapping) else episodes_per_point
        for costs in grid:
            engine = RolloutEngine(
                {**env, "source": source, "costs": costs.to_dict()},
                assistant,
                user,
                num_envs=min(num_envs, count),
                samples_per_group=1,
                seed=seed,
                policy_name=policy_name,
            )
            path = point_path(out, split, costs)
            others = {e.policy for e in read_episodes(path)} - {engine.policy_name}
            if others:
                raise ValueError(
                    f"{path} holds episodes of {sorted(others)}, not {engine.policy_name!r}: use another out_dir"
                )
            episodes = engine.run(count, path, progress=progress)
            points += evaluate_episodes(episodes, lookup, split, rules, baselines, bootstrap_samples, seed)
    report = EvalReport.from_points(policy_name or assistant.name, points)
    report.usage = {role: asdict(b.usage.since(before[role])) for role, b in (meters or {}).items()}
    recorded = json.loads(json.dumps(spec, default=str)) if isinstance(spec, (str, Mapping)) else None
    report.scored_on = {"source": recorded, "rules": asdict(rules)}  # a built source object: recorded as None
    report.write(out)
    return report


def evaluate_spec(
    spec: str,
    cfg: RunConfig,
    out: Path,
    tokenizer: str | None = None,
    splits: Sequence[str] = (),
    episodes_per_point: int | None = None,
    progress: bool = True,
) -> EvalReport:
    """Evaluate the policy ``spec`` names (``trainers.policies``) under ``cfg``'s evaluation settings
    (``splits`` and ``episodes_per_point`` override ``eval.splits`` and ``eval.episodes_per_point``)."""
    from trainers.policies import build_policy
    from trainers.rollout import env_kwargs

    built = build_policy(spec, cfg, tokenizer=tokenizer)
    try:
        return evaluate_policy(
            built.assistant,
            split_points(list(splits) or cfg.eval.splits),
            episodes_per_point or cfg.eval.episodes_per_point,
            env_kwargs(cfg, evaluation=True),
            cfg.seed,
            out,
            user=built.user,
            num_envs=cfg.rollout.num_envs,
            baselines=cfg.eval.baselines,
            bootstrap_samples=cfg.eval.bootstrap_samples,
            policy_name=built.name,
            progress=progress,
            meters=built.meters,
        )
    finally:
        built.close()


def _run(args: argparse.Namespace) -> int:
    from trainers.policies import policy_name

    cfg = config_from_args(args)
    if args.base_url:
        cfg.model.openai.base_urls = [args.base_url]
    spec = args.policy or (args.adapter if args.adapter else "base")
    out = Path(args.out) if args.out else Path(cfg.run_dir) / "eval" / policy_name(spec)
    splits = split_specs(args.split) if args.split else ()
    report = evaluate_spec(spec, cfg, out, args.tokenizer, splits, args.episodes_per_point, progress=not args.quiet)
    print(report.to_markdown())
    print(f"wrote {out / 'eval.md'}, eval.json, eval.csv and plots")
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a policy at fixed prices (held-out and extrapolation grids)")
    add_config_arguments(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--adapter", default=None, help="a LoRA adapter dir on top of the config's model")
    who.add_argument(
        "--policy",
        default=None,
        help="what to evaluate instead of the config's model: a scripted policy (oracle, always_answer, "
        "always_multi, always_clarify, random_mixture), openai:NAME[@URL] (a served model), a run directory, "
        "an adapter directory or a model directory",
    )
    p.add_argument("--base-url", default=None, help="the server of an openai: policy (sets model.openai.base_urls)")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="an openai: policy's tokenizer (path or hub id): prompts are "
        "rendered here and sent as token ids, exactly as the local backends render them",
    )
    p.add_argument(
        "--split",
        default=None,
        help="comma-separated cost splits or JSON grids (default: eval.splits), "
        "e.g. default:heldout,default:extrapolation",
    )
    p.add_argument("--episodes-per-point", type=int, default=None, help="default: eval.episodes_per_point")
    p.add_argument("--out", default=None, help="output dir (default: <run_dir>/eval/<policy>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
