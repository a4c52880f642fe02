"""CPU speed-ups for the quickstart's tiny model: a static KV cache, generation in waves, bf16,
packed SFT batches.

    python benchmarks/cpu_speedups.py [--policy DIR] [--episodes 1536] [--steps 40] [--no-generation]

(a) Generation: ReST's grow stage (compact prompt with reply lookup, scripted user,
    temperature 1, 6 samples per group, 256 envs) with ``model.kv_cache`` "dynamic" and
    "static", and static with ``model.wave_tokens: 16``: episodes/s, and whether the
    episodes are identical (they should be: the cache changes where keys and values live,
    the waves which rows share a call, not what is computed); then the same with bf16 weights
    (``model.dtype: bfloat16``), which rounds differently: the share of identical episodes.
(b) Training: seconds per optimizer step (batch 32, full fine-tuning) on behaviour-cloning
    dialogues: batches drawn plainly and padded, the same batches packed (``sft.packing``:
    no pad tokens, the same loss and gradient), with the padded share of the tokens; and
    packed under bf16 autocast (``sft.bf16: true``, float32 master weights).

``--policy`` is a trained tiny policy (e.g. ``runs/quickstart/bc/policy``), so that the
messages have realistic lengths; without it an untrained model is built (its messages
run to max_new_tokens). Prints a table and writes benchmarks/results/cpu_speedups.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from agents.generation import SamplingParams
from agents.hf_backend import TransformersBackend
from agents.llm_assistant import LLMAssistant
from agents.scripted_user import ScriptedUser
from agents.tiny_model import build_tiny_model
from trainers.config import SFTConfig
from trainers.models import tiny_corpus
from trainers.rest import BCPolicy
from trainers.rollout import RolloutEngine
from trainers.sft import StepPlan, build_sft_examples, collate
from trainers.sft.losses import token_loss_sum

RESULTS = Path(__file__).parent / "results"
ENV = {"source": "synthetic", "costs": "default:train"}


def grow(backend: TransformersBackend, episodes: int) -> tuple[float, list]:
    assistant = LLMAssistant(
        backend, SamplingParams(temperature=1.0, max_new_tokens=64), prompt_style="compact", reply_lookup=True
    )
    engine = RolloutEngine(ENV, assistant, ScriptedUser(), num_envs=256, samples_per_group=6, seed=0)
    start = time.perf_counter()
    played = engine.run(episodes, None, progress=False)
    return time.perf_counter() - start, played


def train_steps(model_dir: Path, examples: list, pad: int, mode: str, steps: int) -> dict[str, float]:
    """Seconds per optimizer step with batches "plain" (padded), "packed" or "packed+bf16" (bf16 autocast)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    plan = StepPlan.make(len(examples), SFTConfig(lora=False, batch_size=32), 1)
    seconds = padded = real = 0.0
    for step in range(steps + 3):
        chosen = [examples[i] for i in plan.examples(step)]
        start = time.perf_counter()
        batch = collate(chosen, pad, torch.device("cpu"), packing=mode.startswith("packed"), capacity=256)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.endswith("bf16")):
            loss = token_loss_sum(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= 3:  # the first steps warm up allocators
            seconds += time.perf_counter() - start
            padded += batch["input_ids"].numel()
            real += sum(len(e.input_ids) for e in chosen)
    return {"seconds_per_step": seconds / steps, "padding_share": 1 - real / padded}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=None, help="a trained tiny policy directory (default: build an untrained one)")
    p.add_argument("--episodes", type=int, default=1536)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--no-generation", action="store_true", help="only the training measurements")
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = (
            Path(args.policy)
            if args.policy
            else build_tiny_model(
                Path(tmp) / "tiny",
                tiny_corpus(seed=0),
                vocab_size=768,
                hidden_size=128,
                num_layers=2,
                num_heads=4,
                intermediate_size=384,
            )
        )
        generation = {}
        variants = {
            "dynamic": ("dynamic", None, "auto"),
            "static": ("static", None, "auto"),
            "static+waves": ("static", 16, "auto"),
            "static+waves+bf16": ("static", 16, "bfloat16"),
        }
        for name, (cache, waves, dtype) in ({} if args.no_generation else variants).items():
            backend = TransformersBackend(
                model_dir, device="cpu", batch_size=256, kv_cache=cache, wave_tokens=waves, dtype=dtype
            )
            seconds, played = grow(backend, args.episodes)
            generation[name] = {
                "episodes_per_s": args.episodes / seconds,
                "seconds": seconds,
                "messages": [e.messages for e in played],
            }
        same = bf16_same = None
        if generation:
            bf16 = generation["static+waves+bf16"].pop("messages")
            bf16_same = sum(a == b for a, b in zip(bf16, generation["static+waves"]["messages"])) / len(bf16)
            same = (
                generation["dynamic"].pop("messages")
                == generation["static"].pop("messages")
                == generation["static+waves"].pop("messages")
            )

        backend = TransformersBackend(model_dir, device="cpu")
        bc = BCPolicy(
            {"ANSWER": 1, "MULTI": 1, "CLARIFY": 2}, LLMAssistant(None, prompt_style="compact", reply_lookup=True)
        )
        dialogues = RolloutEngine(
            ENV, bc, ScriptedUser(), num_envs=256, samples_per_group=1, seed=0, policy_name="bc"
        ).run(32 * 50 * 2, None, progress=False)
        examples = build_sft_examples(dialogues, backend.tokenizer, 512)
        training = {
            mode: train_steps(model_dir, examples, backend.tokenizer.pad_token_id, mode, args.steps)
            for mode in ("plain", "packed", "packed+bf16")
        }

    result = {
        "model": args.policy or "untrained tiny (hidden 128, 2 layers, vocab 768)",
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "generation": generation,
        "same_episodes": same,
        "bf16_same_episodes_share": bf16_same,
        "training": training,
        "packing_speedup": training["plain"]["seconds_per_step"] / training["packed"]["seconds_per_step"],
        "bf16_training_speedup": training["packed"]["seconds_per_step"] / training["packed+bf16"]["seconds_per_step"],
    }
    rows = ["| measurement | plain | faster | ratio |", "|---|---|---|---|"]
    if generation:
        result["generation_speedup"] = generation["static"]["episodes_per_s"] / generation["dynamic"]["episodes_per_s"]
        result["waves_speedup"] = generation["static+waves"]["episodes_per_s"] / generation["static"]["episodes_per_s"]
        rows.append(
            f"| grow, episodes/s (dynamic vs static KV cache) | {generation['dynamic']['episodes_per_s']:.1f} | "
            f"{generation['static']['episodes_per_s']:.1f} | {result['generation_speedup']:.2f}x |"
        )
        rows.append(
            f"| grow, episodes/s (static vs static + waves of 16 tokens) | "
            f"{generation['static']['episodes_per_s']:.1f} | {generation['static+waves']['episodes_per_s']:.1f} | "
            f"{result['waves_speedup']:.2f}x |"
        )
        result["bf16_generation_speedup"] = (
            generation["static+waves+bf16"]["episodes_per_s"] / generation["static+waves"]["episodes_per_s"]
        )
        rows.append(
            f"| grow, episodes/s (static + waves, float32 vs bf16 weights) | "
            f"{generation['static+waves']['episodes_per_s']:.1f} | "
            f"{generation['static+waves+bf16']['episodes_per_s']:.1f} | {result['bf16_generation_speedup']:.2f}x |"
        )
    plain = training["plain"]
    for mode, key in (("packed", "packing_speedup"),):
        rows.append(
            f"| SFT, s/step (plain vs {mode}) | {plain['seconds_per_step']:.3f} | "
            f"{training[mode]['seconds_per_step']:.3f} | {result[key]:.2f}x |"
        )
        rows.append(
            f"| padded share of tokens (plain vs {mode}) | {plain['padding_share']:.2f} | "
            f"{training[mode]['padding_share']:.2f} | |"
        )
    rows.append(
        f"| SFT, s/step (packed, float32 vs bf16 autocast) | {training['packed']['seconds_per_step']:.3f} | "
        f"{training['packed+bf16']['seconds_per_step']:.3f} | {result['bf16_training_speedup']:.2f}x |"
    )
    print("\n".join(rows))
    if same is not None:
        print(f"identical episodes with the three float32 settings: {same}; with bf16 weights: {bf16_same:.0%} of them")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu_speedups.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
