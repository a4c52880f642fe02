"""What a process keeps resident after ``train_sft`` returns, with and without handing the heap's
freed pages back to the OS (``trainers.sft.loop.return_freed_memory``: gc + glibc ``malloc_trim``).

    python benchmarks/sft_memory.py [--config configs/smollm2_clarifyingqa.yaml] [--steps 6] [--out NAME] [key=value ...]

(``model.name=gemma3-270m --out sft_memory_gemma3``.) Each variant runs in a fresh process: the
config's LoRA SFT on behaviour-cloning dialogues (scripted user), ``--steps`` steps; resident set
size before training and after ``train_sft`` returns. Prints a table and writes
benchmarks/results/<out>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def measure(config: str, overrides: list[str], steps: int, trim: bool) -> dict:
    """Resident GB before and after ``train_sft`` in this process (``trim=False``: gc only)."""
    import gc

    import psutil
    from transformers import AutoTokenizer

    import trainers.sft.loop
    from agents import ScriptedUser
    from trainers.config_loading import load_config
    from trainers.models import load_policy_model, make_assistant
    from trainers.rest import BCPolicy, human_questions
    from trainers.rollout import RolloutEngine, env_kwargs
    from trainers.sft import build_sft_examples, train_sft

    if not trim:
        trainers.sft.loop.return_freed_memory = gc.collect
    cfg = load_config(config, overrides)
    model = load_policy_model(cfg)
    policy = BCPolicy(cfg.rest.bc.move_weights, make_assistant(cfg, None), human_questions(cfg))
    episodes = RolloutEngine(env_kwargs(cfg), policy, ScriptedUser(), num_envs=64, seed=0).run(
        cfg.sft.batch_size * steps, None, progress=False
    )
    examples = build_sft_examples(episodes, AutoTokenizer.from_pretrained(model), cfg.sft.max_length)
    rss = lambda: psutil.Process().memory_info().rss / 1e9  # noqa: E731
    before = rss()
    with tempfile.TemporaryDirectory() as tmp:
        sft = dataclasses.replace(cfg.sft, epochs=1, max_steps=steps, checkpoint_steps=0)
        train_sft(model, examples, Path(tmp) / "sft", sft)
    return {"trim": trim, "resident_gb_before": before, "resident_gb_after": rss()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/smollm2_clarifyingqa.yaml")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--out", default="sft_memory")
    p.add_argument("--variant", choices=["trim", "no-trim"], help=argparse.SUPPRESS)  # one child's run
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. model.name=gemma3-270m)")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(measure(args.config, args.overrides, args.steps, args.variant == "trim")))
        return
    rows = []
    for variant in ("no-trim", "trim"):
        child = [sys.executable, __file__, "--config", args.config, "--steps", str(args.steps), "--variant", variant]
        out = subprocess.run([*child, *args.overrides], capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    result = {"config": args.config, "overrides": args.overrides, "steps": args.steps, "runs": rows}
    table = ["| after train_sft returns | resident GB before | resident GB after |", "|---|---|---|"]
    for r in rows:
        label = "gc + malloc_trim (train_sft now)" if r["trim"] else "gc only"
        table.append(f"| {label} | {r['resident_gb_before']:.2f} | {r['resident_gb_after']:.2f} |")
    path = RESULTS / f"{args.out}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join([*table, f"wrote {path}"]))


if __name__ == "__main__":
    main()
