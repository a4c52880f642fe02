"""Served models: the OpenAI-compatible backend (retries, cache, errors), `clarify eval --policy
openai:...`, `clarify compare`, and the verifiers environment — against a real chat server on
127.0.0.1 whose replies are the oracle's moves (the vLLM server checks are in test_served_vllm.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import ChatServer, defaults_config, oracle_reply, require_verifiers
from trainers.cli import main

ARGS = [
    "--split",
    "default:heldout",
    "--episodes-per-point",
    "3",
    "--quiet",
    "eval.bootstrap_samples=20",
    "rollout.num_envs=8",
    "model.openai.max_retries=2",
]


@pytest.fixture
def server():
    chat = ChatServer(oracle_reply, model="oracle-chat")
    yield chat
    chat.close()


def points(path: Path) -> list[dict]:
    return [{k: v for k, v in p.items()} for p in json.loads(path.read_text())["points"]]


def test_a_served_policy_plays_the_episodes_the_local_one_does_and_a_rerun_sends_nothing(tmp_path, server) -> None:
    config = defaults_config(tmp_path)
    common = [f"run_dir={tmp_path / 'run'}", *ARGS]
    assert main(["eval", config, "--policy", "oracle", "--out", str(tmp_path / "local"), *common]) == 0
    served = ["eval", config, "--policy", "openai:oracle-chat", "--base-url", server.url]
    assert main([*served, "--out", str(tmp_path / "served"), *common]) == 0
    local, remote = points(tmp_path / "local" / "eval.json"), points(tmp_path / "served" / "eval.json")
    assert len(local) == 9 and sum(p["n"] for p in remote) == 27
    assert local == remote  # the same moves, scored the same
    first = json.loads((tmp_path / "served" / "eval.json").read_text())["usage"]["assistant"]
    assert first["requests"] == server.requests > 27 and first["cached"] == 0  # clarifications take two turns
    # the same evaluation again, into a new folder: every response comes from the on-disk cache
    assert main([*served, "--out", str(tmp_path / "again"), *common]) == 0
    again = json.loads((tmp_path / "again" / "eval.json").read_text())["usage"]["assistant"]
    assert again["requests"] == 0 and again["cached"] == first["requests"] and server.requests == first["requests"]
    assert points(tmp_path / "again" / "eval.json") == remote
    assert "requests sent" in (tmp_path / "served" / "eval.md").read_text()


def test_server_errors_and_rate_limits_are_retried(tmp_path, server) -> None:
    from agents.generation import SamplingParams
    from agents.openai_backend import OpenAIBackend

    backend = OpenAIBackend("oracle-chat", server.url, max_retries=3)
    server.fail = [500, 429]
    conversation = [
        {
            "role": "system",
            "content": "Price of a clarifying question: 0.100. Price of each word of your final response: 0.0100.",
        },
        {"role": "user", "content": "Who?"},
    ]
    [[completion]] = backend.generate([conversation], SamplingParams(temperature=0, max_new_tokens=8))
    assert completion.text.startswith("ANSWER:") and server.requests == 3  # two failures, then the answer
    assert backend.usage.requests == 1 and backend.usage.prompt_tokens == 10


def test_an_adapter_is_loaded_into_the_servers_under_a_name_that_carries_its_weights_digest(tmp_path, server) -> None:
    from agents.generation import SamplingParams
    from agents.openai_backend import OpenAIBackend

    other = ChatServer(oracle_reply, model="oracle-chat")
    backend = OpenAIBackend("oracle-chat", [server.url, other.url])
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v1")
    backend.add_adapter("iter-1", adapter)
    first = backend.adapters["iter-1"]
    assert first.startswith("iter-1-") and server.adapters == other.adapters == [first]  # every server
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v2")  # retrained in place: a new version
    backend.add_adapter("iter-1", adapter)
    assert backend.adapters["iter-1"] != first and server.adapters[-1] == backend.adapters["iter-1"]
    conversation = [
        {
            "role": "system",
            "content": "Price of a clarifying question: 0.100. Price of each word of your final response: 0.0100.",
        },
        {"role": "user", "content": "Who?"},
    ]
    backend.generate([conversation, conversation], SamplingParams(temperature=0), adapter="iter-1")
    assert {b["model"] for b in server.bodies + other.bodies} == {backend.adapters["iter-1"]}
    assert len(server.bodies) == len(other.bodies) == 1  # spread round-robin over the servers
    other.close()


@pytest.mark.parametrize(
    "policy, message",
    [
        ("openai:nope", "does not serve the model 'nope' (it serves: oracle-chat)"),
        ("openai:oracle-chat@http://127.0.0.1:9/v1", "cannot reach http://127.0.0.1:9/v1"),
    ],
)
def test_an_unknown_model_and_an_unreachable_server_are_one_line_errors(tmp_path, server, capsys, policy, message):
    policy = policy if "@" in policy else f"{policy}@{server.url}"
    code = main(
        [
            "eval",
            defaults_config(tmp_path),
            "--policy",
            policy,
            f"run_dir={tmp_path}",
            *ARGS,
            "model.openai.max_retries=0",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_compare_writes_one_table_and_one_plot_of_every_policy(tmp_path, server) -> None:
    out = tmp_path / "compare"
    args = [
        "compare",
        defaults_config(tmp_path),
        "--policies",
        "oracle",
        "always_multi",
        "always_clarify",
        f"openai:oracle-chat@{server.url}",
        "--out",
        str(out),
        "--quiet",
        f"run_dir={tmp_path}",
        "eval.splits=[default:heldout]",
        "eval.episodes_per_point=3",
        "eval.bootstrap_samples=20",
    ]
    assert main(args) == 0
    rows = {r["policy"]: r for r in json.loads((out / "compare.json").read_text())["policies"]}
    assert set(rows) == {"oracle", "always_multi", "always_clarify", "oracle-chat"}
    assert rows["oracle"]["reward"] == rows["oracle-chat"]["reward"] >= rows["always_multi"]["reward"]
    assert rows["always_multi"]["multi_rate"] == 1.0 and rows["always_multi"]["rho_clarify_vs_question"] == 0.0
    assert rows["oracle-chat"]["requests"] > 0 and rows["oracle"]["requests"] == 0
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG" and (out / "compare.csv").exists()
    # the first policy against each other at each point, paired on the same episodes
    points = json.loads((out / "compare_points.json").read_text())
    assert {p["other"] for p in points} == {"always_multi", "always_clarify", "oracle-chat"}
    assert all(p["policy"] == "oracle" and p["pairs"] == 3 for p in points)
    chat = [p for p in points if p["other"] == "oracle-chat"]
    assert all(p["difference"] == 0.0 and p["paired"] == "tie" for p in chat)
    multi = [p for p in points if p["other"] == "always_multi"]
    assert all(p["difference"] == pytest.approx(p["reward"] - p["other_reward"]) for p in multi)
    assert "paired on the same episodes" in (out / "compare_points.md").read_text()
    assert main(args) == 0  # finished evaluations are read back: nothing is sent again
    assert json.loads((out / "compare.json").read_text())["policies"] == list(
        sorted(rows.values(), key=lambda r: -r["reward"])
    )


def test_a_verifiers_evaluation_scores_each_transcript_as_clarify_env_does(server) -> None:
    require_verifiers()
    import verifiers as vf
    from openai import AsyncOpenAI

    from clarify_env.integrations.verifiers_env import COMPONENTS, replay

    env = vf.load_environment("clarify-env", source="synthetic", costs="default:heldout", num_examples=12, seed=3)
    client = vf.OpenAIChatCompletionsClient(AsyncOpenAI(base_url=server.url, api_key="EMPTY"))
    results = env.evaluate_sync(
        client=client,
        model="oracle-chat",
        num_examples=12,
        rollouts_per_example=1,
        sampling_args={"temperature": 0.0, "max_tokens": 64},
    )
    outputs = results["outputs"]
    assert len(outputs) == 12 and {o["stop_condition"] for o in outputs} == {"dialogue_over"}
    clarified = 0
    for o in outputs:
        info = json.loads(o["info"]) if isinstance(o["info"], str) else o["info"]
        said = [m["content"] for m in o["completion"] if m["role"] == "assistant"]
        clarified += said[0].startswith("CLARIFY")
        components = replay(info, said)["reward_components"]
        assert o["reward"] == pytest.approx(components["reward"], abs=1e-9)
        for name in COMPONENTS:
            assert o["metrics"][name] == pytest.approx(components[name], abs=1e-12)
    assert clarified > 0  # the scripted user answered clarifying questions inside verifiers' loop


def test_an_empty_model_response_in_verifiers_is_the_protocol_error_clarify_env_scores() -> None:
    """verifiers raises EmptyModelResponseError on an empty reply and records no message; the env
    plays it as the empty message it is (a protocol error), in the first turn or after a question."""
    require_verifiers()
    import verifiers as vf
    from openai import AsyncOpenAI

    from clarify_env.integrations.verifiers_env import replay

    def clarify_then_nothing(messages) -> str:
        move = oracle_reply(messages)
        return move if move.startswith("CLARIFY") else ""

    chat = ChatServer(clarify_then_nothing, model="mute")
    try:
        env = vf.load_environment("clarify-env", costs="default:heldout", num_examples=12, seed=3)
        client = vf.OpenAIChatCompletionsClient(AsyncOpenAI(base_url=chat.url, api_key="EMPTY"))
        outputs = env.evaluate_sync(client=client, model="mute", num_examples=12, sampling_args={"temperature": 0.0})[
            "outputs"
        ]
    finally:
        chat.close()
    assert len(outputs) == 12 and {o["stop_condition"] for o in outputs} == {"dialogue_over"}
    turns = set()
    for o in outputs:
        info = json.loads(o["info"]) if isinstance(o["info"], str) else o["info"]
        said = [m["content"] for m in o["completion"] if m["role"] == "assistant"]
        turns.add(len(said))
        components = replay(info, said)["reward_components"]
        assert components["protocol_penalty"] > 0 and components["accuracy"] == 0.0
        assert o["reward"] == pytest.approx(components["reward"], abs=1e-9) and o["reward"] < 0
    assert turns == {0, 1}  # silent at once, and silent after asking
