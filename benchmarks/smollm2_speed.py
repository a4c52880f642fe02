"""How close the grow/evaluation engine and SFT come to what the CPU allows, for SmolLM2-135M-Instruct.

    python benchmarks/smollm2_speed.py [--config configs/smollm2_clarifyingqa.yaml] [--prompts 192] [--steps 6]
        [--fixed-tokens 64] [--no-generation | --no-sft] [--out smollm2_speed] [key=value ...]

(``model.name=gemma3-270m --out gemma3_speed`` measures Gemma 3 270M on the same work.)

(a) Generation: the config's assistant prompts of ClarifyingQA tasks (its train split), played
    through ``VLLMBackend.generate`` (what the grow stage and the evaluation call: chat template,
    per-request seeds, stop strings, prefix caching) and through a bare ``vllm.LLM.generate`` of the
    same token prompts and sampling parameters in one call: generated tokens per second of each
    and their ratio (the engine's overhead). Alternated twice, each from an empty prefix cache;
    the faster of each counts. These rates depend on what the model chooses to say (a batch waits
    for its longest reply), so they compare engines, not models: beside them, the same prompts
    greedy with a fixed reply length (``--fixed-tokens``, the stop token ignored) give prompt
    tokens/s (prefill: one new token each) and decode tokens/s (the rest), a model's own costs.
(b) SFT: LoRA training steps (the config's sft section: batch, packing, precision) through
    ``trainers.sft.train_sft`` against a bare loop over the same batches (forward, backward,
    AdamW step, no checkpointing or logging): training tokens per second of each over the steps
    after the first (model loading and warm-up excluded) and their ratio.

Prints a table and writes benchmarks/results/<out>.json (``smollm2_speed`` by default).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def prompts_and_params(cfg, count: int):
    import numpy as np

    from agents.generation import SamplingParams
    from clarify_env.env import ClarifyEnv
    from trainers.models import make_assistant
    from trainers.rollout import env_kwargs

    env, rng = ClarifyEnv(**env_kwargs(cfg)), np.random.default_rng(0)
    assistant = make_assistant(cfg, None)
    conversations = [assistant.conversation(env.reset(seed=int(rng.integers(2**31)))[0]) for _ in range(count)]
    sampling = SamplingParams(
        temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p,
        max_new_tokens=cfg.sampling.max_new_tokens,
        stop=tuple(cfg.sampling.stop),
    )
    return conversations, sampling


def timed_run(backend, run):
    """``run()``'s output and seconds, from an empty prefix cache (no run reuses another's prefills)."""
    backend.llm.reset_prefix_cache()
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def generation(cfg, model: str, count: int, fixed_tokens: int) -> dict:
    from vllm import SamplingParams as VLLMSampling

    from agents.vllm_backend import VLLMBackend

    conversations, sampling = prompts_and_params(cfg, count)
    backend = VLLMBackend(model, chat_template_kwargs=cfg.model.chat_template_kwargs, **cfg.model.vllm)
    seeds = list(range(count))
    backend.generate(conversations[:8], sampling, seeds=seeds[:8])  # warm up
    prompts = backend.render(conversations)
    params = [
        VLLMSampling(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop) or None,
            seed=s,
        )
        for s in seeds
    ]

    timed = partial(timed_run, backend)

    # alternated, twice each; the faster of each pair counts (the machine's speed drifts)
    runs = {"engine": [], "bare": []}
    for _ in range(2):
        runs["engine"].append(timed(lambda: backend.generate(conversations, sampling, seeds=seeds)))
        runs["bare"].append(
            timed(lambda: backend.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False))
        )
    ours, engine_s = min(runs["engine"], key=lambda r: r[1])
    bare, bare_s = min(runs["bare"], key=lambda r: r[1])
    fixed = fixed_length(backend, prompts, fixed_tokens)
    backend.close()
    ours_tokens = sum(len(c[0].token_ids) for c in ours)
    bare_tokens = sum(len(o.outputs[0].token_ids) for o in bare)
    return {
        "prompts": count,
        "engine_tokens_per_s": ours_tokens / engine_s,
        "bare_tokens_per_s": bare_tokens / bare_s,
        "ratio": (ours_tokens / engine_s) / (bare_tokens / bare_s),
        "same_tokens": ours_tokens == bare_tokens,
        "fixed_length": fixed,
    }


def fixed_length(backend, prompts: list[list[int]], new_tokens: int) -> dict:
    """Prefill and decode rates of greedy replies of exactly ``new_tokens`` (stop token ignored)."""
    from vllm import SamplingParams as VLLMSampling

    token_prompts = [{"prompt_token_ids": p} for p in prompts]

    def run(length: int) -> float:
        params = VLLMSampling(temperature=0.0, max_tokens=length, ignore_eos=True)
        return min(
            timed_run(backend, lambda: backend.llm.generate(token_prompts, params, use_tqdm=False))[1] for _ in range(2)
        )

    prefill_s, whole_s = run(1), run(new_tokens)
    return {
        "new_tokens": new_tokens,
        "prompt_tokens": sum(len(p) for p in prompts),
        "prefill_prompt_tokens_per_s": sum(len(p) for p in prompts) / prefill_s,
        "decode_tokens_per_s": len(prompts) * (new_tokens - 1) / (whole_s - prefill_s),
    }


def sft(cfg, model: str, steps: int) -> dict:
    import dataclasses

    import torch
    from transformers import AutoTokenizer

    from agents import ScriptedUser
    from trainers.models import make_assistant
    from trainers.rest import BCPolicy, human_questions
    from trainers.rollout import RolloutEngine, env_kwargs
    from trainers.sft import StepPlan, build_sft_examples, collate, train_sft
    from trainers.sft.loop import load_trainable_model, use_bf16
    from trainers.sft.losses import label_token_loss_sum

    policy = BCPolicy(cfg.rest.bc.move_weights, make_assistant(cfg, None), human_questions(cfg))
    batch = cfg.sft.batch_size * cfg.sft.grad_accumulation
    episodes = RolloutEngine(env_kwargs(cfg), policy, ScriptedUser(), num_envs=64, seed=0).run(
        batch * steps, None, progress=False
    )
    examples = build_sft_examples(episodes, AutoTokenizer.from_pretrained(model), cfg.sft.max_length)
    # a log record after every step timestamps it
    config = dataclasses.replace(cfg.sft, epochs=1, max_steps=steps, logging_steps=1, checkpoint_steps=0)
    plan = StepPlan.make(len(examples), config, 1)
    # the steps after the first, which both timings cover
    tokens = sum(len(examples[i].input_ids) for step in range(1, steps) for i in plan.examples(step))
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        train_sft(model, examples, Path(tmp) / "sft", config, on_log=lambda _: stamps.append(time.perf_counter()))
    # steady state: from the end of the first step (loading and warm-up done) to the end of the last
    ours_s = stamps[-1] - stamps[0]
    bf16 = use_bf16(cfg.sft.bf16)
    net = load_trainable_model(model, cfg.sft, bf16, None)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.sft.learning_rate)
    start = 0.0
    for step in range(steps):
        if step == 1:
            start = time.perf_counter()
        chosen = [examples[i] for i in plan.examples(step)]
        for j in range(0, len(chosen), cfg.sft.batch_size):
            tensors = collate(
                chosen[j : j + cfg.sft.batch_size],
                0,
                torch.device("cpu"),
                packing=cfg.sft.packing,
                capacity=cfg.sft.max_length,
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                label_token_loss_sum(net, tensors).backward()
        optimizer.step()
        optimizer.zero_grad()
    bare_s = time.perf_counter() - start
    return {
        "steps": steps,
        "tokens": tokens,
        "bf16": bf16,
        "train_sft_tokens_per_s": tokens / ours_s,
        "bare_tokens_per_s": tokens / bare_s,
        "ratio": bare_s / ours_s,
        "note": "training tokens (every position) per second over the steps after the first (loading and warm-up excluded)",
    }


def main() -> None:
    import torch

    from trainers.config_loading import load_config
    from trainers.models import load_policy_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/smollm2_clarifyingqa.yaml")
    p.add_argument("--prompts", type=int, default=192)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--fixed-tokens", type=int, default=64, help="reply length of the fixed-length generation")
    p.add_argument("--no-generation", action="store_true")
    p.add_argument("--no-sft", action="store_true")
    p.add_argument("--out", default="smollm2_speed", help="the result file's name under benchmarks/results/")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. model.name=gemma3-270m)")
    args = p.parse_args()
    if args.steps < 2:
        p.error("--steps must be at least 2: the first step (warm-up) is not timed")
    if args.fixed_tokens < 2:
        p.error("--fixed-tokens must be at least 2: decode is timed beyond the first new token")
    cfg = load_config(args.config, args.overrides)
    model = load_policy_model(cfg)
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "model": cfg.model.name,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if not args.no_generation:
        result["generation"] = generation(cfg, model, args.prompts, args.fixed_tokens)
    if not args.no_sft:
        result["sft"] = sft(cfg, model, args.steps)
    rows = ["| measure | ours | bare | ratio |", "|---|---|---|---|"]
    if "generation" in result:
        g = result["generation"]
        rows.append(
            f"| vLLM generation, tokens/s ({g['prompts']} prompts) | {g['engine_tokens_per_s']:.1f} | "
            f"{g['bare_tokens_per_s']:.1f} | {g['ratio']:.2f} |"
        )
        f = g["fixed_length"]
        rows.append(f"| prefill (greedy, bare), prompt tokens/s | | {f['prefill_prompt_tokens_per_s']:.1f} | |")
        rows.append(
            f"| decode ({f['new_tokens']} tokens, greedy, bare), tokens/s | | {f['decode_tokens_per_s']:.1f} | |"
        )
    if "sft" in result:
        s = result["sft"]
        rows.append(
            f"| SFT (LoRA{', bf16' if s['bf16'] else ''}), training tokens/s | {s['train_sft_tokens_per_s']:.1f} | "
            f"{s['bare_tokens_per_s']:.1f} | {s['ratio']:.2f} |"
        )
    print("\n".join(rows))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.out}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
