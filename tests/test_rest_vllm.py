"""One ReST iteration on vLLM: the LoRA policies are hot-swapped on one engine."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from helpers import require_vllm, train

pytestmark = pytest.mark.vllm

VLLM = [
    # head_dim 64, which every vLLM attention backend supports
    "model.tiny={hidden_size: 128, num_layers: 1, num_heads: 2, intermediate_size: 256, vocab_size: 512}",
    "model.backend=vllm",
    "model.vllm={dtype: float32, max_model_len: 512, kv_cache_memory_bytes: 67108864, enable_lora: true, "
    "max_lora_rank: 16, enforce_eager: true}",
    "sft.lora=true",
    "sft.lora_rank=16",
    "sft.lora_alpha=32",
    "sft.learning_rate=0.01",
    "wandb.enabled=false",
]


def test_one_rest_iteration_on_vllm_hot_swaps_lora_adapters_on_one_engine_and_trains_with_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_vllm()
    import agents.vllm_backend as vllm_backend

    engines, adapters_used = [], []

    class CountingVLLMBackend(vllm_backend.VLLMBackend):
        """Counts engine constructions and records the adapter of each generate call."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            engines.append(self)

        def generate(self, conversations, sampling, adapter=None, seeds=None, prefixes=None):
            adapters_used.append(adapter)
            return super().generate(conversations, sampling, adapter, seeds=seeds, prefixes=prefixes)

    monkeypatch.setattr(vllm_backend, "VLLMBackend", CountingVLLMBackend)
    run = tmp_path / "run"
    assert train(run, *VLLM) == 0

    # the start's evaluation and grow share one engine (two adapters hot-swapped), shut down before the
    # improve step trains; the iteration's evaluation starts another
    assert len(engines) == 2 and all(e._llm is None for e in engines)
    policy = json.loads((run / "iter-1" / "done.json").read_text())["policy"]
    assert policy == {"model": "tiny-model", "adapter": "iter-1/policy", "name": "iter-1"}  # relative to the run
    assert (run / "iter-1" / "policy" / "adapter_config.json").exists()
    assert not (run / "iter-1" / "policy" / "model.safetensors").exists()  # an adapter, not a full checkpoint
    # the behaviour-cloned adapter evaluates itself and grows; then the new adapter is evaluated
    assert [a for a, _ in itertools.groupby(adapters_used)] == ["bc", "iter-1"]
    evaluated = {
        json.loads(line)["policy"]
        for f in (run / "iter-1" / "eval" / "episodes").glob("*.jsonl")
        for line in f.read_text().splitlines()
    }
    assert evaluated == {"iter-1"}
    assert json.loads((run / "iter-1" / "eval" / "eval.json").read_text())["policy"] == "iter-1"
