"""Can a checkpoint learn the price-dependent move from clean labels? (oracle-dialogue SFT probe)

    python benchmarks/oracle_sft_probe.py --model runs/quickstart/seed/policy --steps 900 \\
        [--episodes 9600 --shrink 0.5 --shrink-params qk --tag seed_900]

Plays ``--episodes`` oracle dialogues at the training prices of ``configs/quickstart.yaml``
(compact prompt, scripted user), fine-tunes ``--model`` on them for ``--steps`` optimizer
steps with the quickstart's SFT settings, then evaluates the result greedily at the nine
held-out price points (``--per-point`` episodes each) and prints the mean reward, the
oracle agreement, the rank correlations and the move rates per point. ``--shrink`` first
multiplies the transformer blocks' weight matrices (``--shrink-params qk``: only the query
and key projections) by that factor (shrink-and-perturb, Ash & Adams 2020, with
``--perturb`` noise), to test whether a warm start that learned to ignore the prices can be
made plastic again. Writes ``benchmarks/results/oracle_sft_probe_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from agents.base import Agent
from agents.generation import Completion
from agents.oracle_policy import OraclePolicy
from trainers.config import load_config
from trainers.evaluate import evaluate_policy, split_points
from trainers.models import make_assistant, make_backend, make_user
from trainers.rest import Policy, grow, improve
from trainers.rollout import env_kwargs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


class OracleDialogues(Agent):
    """The oracle's moves, recorded in the LLM assistant's prompt format (like the seed policy)."""

    name = "oracle_dialogues"

    def __init__(self, prompt: Agent) -> None:
        self.prompt, self.oracle = prompt, OraclePolicy(1)

    def act(self, observation):
        return self.oracle.act(observation)

    def generate_batch(self, observations, seeds=None):
        return [Completion(self.oracle.act(o), (), (), "stop") for o in observations]

    def conversation(self, observation):
        return self.prompt.conversation(observation)


def shrink_copy(src: str, dst: Path, factor: float, which: str, noise: float, seed: int) -> str:
    """A copy of ``src`` whose block weight matrices (or only q/k projections) are scaled by ``factor``, plus noise."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() != 2 or "embed" in name or "lm_head" in name:
                continue
            if which == "qk" and not ("q_proj" in name or "k_proj" in name):
                continue
            p.mul_(factor).add_(noise * torch.randn(p.shape, generator=generator))
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return str(dst)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint to fine-tune (e.g. a run's seed/policy or tiny-model)")
    p.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    p.add_argument("--episodes", type=int, default=9600)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--per-point", type=int, default=100)
    p.add_argument("--shrink", type=float, default=1.0)
    p.add_argument("--shrink-params", choices=("all", "qk"), default="all")
    p.add_argument("--perturb", type=float, default=0.0)
    p.add_argument("--tag", default="probe")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = load_config(args.config, [f"run_dir={work}", f"sft.max_steps={args.steps}", f"seed={args.seed}"])
        model = args.model
        if args.shrink != 1.0 or args.perturb:
            model = shrink_copy(model, work / "shrunk", args.shrink, args.shrink_params, args.perturb, args.seed)
        started = time.time()
        episodes = grow(cfg, OracleDialogues(make_assistant(cfg, None, None, 0.0, "oracle")), make_user(cfg, None),
                        work / "oracle.jsonl", 99, args.episodes)
        policy = improve(cfg, model, Policy(model, None, "start"), episodes, work / "policy", "probe")
        sft_seconds = time.time() - started
        backend = make_backend(cfg.model, policy.model)
        report = evaluate_policy(
            make_assistant(cfg, backend, None, 0.0, args.tag), split_points(["default:heldout"]), args.per_point,
            env_kwargs(cfg.env), cfg.seed, work / "eval", user=make_user(cfg, backend), num_envs=256,
            baselines=(), bootstrap_samples=200, policy_name=args.tag, progress=False,
        )
    summary = {k: round(v, 3) for k, v in report.summary().items()}
    rows = [{"alpha": q.question, "beta": q.word, "reward": round(q.reward, 3), "agree": round(q.oracle_agreement, 3),
             "clarify": round(q.clarify_rate, 3), "multi": round(q.multi_rate, 3), "answer": round(q.answer_rate, 3)}
            for q in report.points]
    print("| alpha | beta | reward | agree | clarify | multi | answer |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(f"{v:g}" for v in r.values()) + " |")
    print(json.dumps(summary))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"oracle_sft_probe_{args.tag}.json"
    out.write_text(json.dumps({"args": vars(args), "sft_and_data_seconds": round(sft_seconds), "summary": summary,
                               "points": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
