"""The self-play user's own adapter: its training chats (the human clarifying question heard, the
human clarification said, a MULTI enumeration read), the run stage that trains it, and the user
that plays under it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.generation import Completion, GenerationBackend
from agents.llm_user import LLMUser
from clarify_env.sources import load_clarifyingqa
from helpers import train, write_clarifyingqa
from trainers.cli import main
from trainers.config import ConfigError
from trainers.config_loading import load_config
from trainers.user_cloning import user_chats


def test_the_users_chats_hear_the_human_question_and_say_the_human_clarification(tmp_path: Path) -> None:
    tasks = load_clarifyingqa(write_clarifyingqa(tmp_path / "cq.csv", 4))
    chats = user_chats(tasks)
    assert len(chats) == 2 * sum(len(t.interpretations) for t in tasks)  # one clarify, one extract per meaning
    by_id = {c.episode_id: c.chat for c in chats}
    clarify, extract = by_id["user/q1/2/clarify"], by_id["user/q1/2/extract"]
    assert "Who won cup number 1 in 1999?" in clarify[0]["content"]  # told its meaning, not its answer
    assert "Zorvath" not in clarify[0]["content"] + extract[0]["content"]
    assert clarify[1] == {"role": "user", "content": "Which year's cup do you mean?"}
    assert clarify[2] == {"role": "assistant", "content": "The 1999 one."}
    assert "The 1987 one.: Zorvath Kel1x0" in extract[1]["content"]  # the whole enumeration, read
    assert extract[2] == {"role": "assistant", "content": "Zorvath Kel1x2"}


def test_a_one_meaning_task_gives_the_user_nothing_to_learn(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text(
        "id,vagueQuestion,clearQuestion,clarifyingQuestion,clarification,answers\n"
        "a,Who won?,Who won in 1987?,Which year?,1987.,Ada\n"
    )
    assert user_chats(load_clarifyingqa(path)) == []


class RecordingBackend(GenerationBackend):
    """Answers every request with one line and records the adapter each call used."""

    tokenizer = None

    def __init__(self) -> None:
        self.adapters: dict[str, str] = {}
        self.calls: list[str | None] = []

    def generate(self, conversations, sampling, adapter=None, seeds=None, prefixes=None):
        self.check_request(conversations, adapter, seeds, prefixes)
        self.calls.append(adapter)
        return [[Completion("The 1987 one.", (1,), (2,), "stop")] for _ in conversations]

    def add_adapter(self, name, path):
        self.adapters[name] = str(path)


def test_the_user_plays_under_its_adapter_and_a_missing_one_is_named(tmp_path: Path) -> None:
    from trainers.models import make_user
    from trainers.stages import StageError

    config = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    cfg = load_config(config, [f"run_dir={tmp_path}", "user.kind=llm", "user.adapter=clone"])
    with pytest.raises(StageError, match=r"user.adapter: no LoRA adapter at .*user/adapter: `clarify train`"):
        make_user(cfg, RecordingBackend())
    (tmp_path / "user" / "adapter").mkdir(parents=True)
    (tmp_path / "user" / "adapter" / "adapter_config.json").write_text("{}")
    backend = RecordingBackend()
    user = make_user(cfg, backend)
    assert isinstance(user, LLMUser) and backend.adapters == {"user": str(tmp_path / "user" / "adapter")}
    make_user(cfg, backend)  # registered once per backend
    with pytest.raises(ConfigError, match="'user.adapter' needs user.kind llm"):
        load_config(config, ["user.adapter=clone"])


def test_a_run_clones_its_user_first_and_resumes_without_redoing_it(tmp_path: Path, capsys) -> None:
    path = write_clarifyingqa(tmp_path / "cq.csv", 40)
    run = tmp_path / "run"
    overrides = (
        f"env.source={{name: clarifyingqa, path: {path}, split: train}}",
        f"eval.source={{name: clarifyingqa, path: {path}, split: dev}}",
        "user.kind=llm",
        "user.adapter=clone",
        "user.clone_epochs=3",
        "rest.iterations=0",
        "rest.bc.episodes=64",
        "wandb.enabled=false",
    )
    assert train(run, *overrides) == 0
    record = json.loads((run / "user" / "done.json").read_text())
    train_tasks = len(json.loads((run / "data.json").read_text())["train"]["ids"])
    assert record["turns"]["clarify"] == record["turns"]["extract"] >= 2 * train_tasks
    curve = json.loads((run / "user" / "adapter" / "sft_metrics.json").read_text())["loss_curve"]
    assert (
        curve[-1]["loss"] < curve[0]["loss"] - 0.4
    )  # it trained on the user's turns (a LoRA of a random tiny model: slowly)
    assert (run / "bc" / "eval" / "done.json").exists()  # evaluated against the cloned user
    capsys.readouterr()
    assert train(run, *overrides, resume=True) == 0
    assert "[user] cloning" not in capsys.readouterr().out
    # a change to how the user was cloned would alter the finished stage: refused
    assert train(run, *overrides[:-4], "user.clone_epochs=4", *overrides[-3:], resume=True) == 2
    assert "user.clone_epochs" in capsys.readouterr().err


def test_clarify_eval_with_a_clone_that_was_never_trained_is_one_line(tmp_path: Path, capsys) -> None:
    config = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    code = main(["eval", config, f"run_dir={tmp_path}", "user.kind=llm", "user.adapter=clone", "--policy", "base"])
    assert code == 2
    err = capsys.readouterr().err
    assert "user.adapter: no LoRA adapter" in err and "Traceback" not in err


def test_generation_settings_and_the_user_change_after_behaviour_cloning_but_its_training_does_not(tmp_path) -> None:
    from trainers.stages import resume_check

    (tmp_path / "bc").mkdir()
    (tmp_path / "bc" / "done.json").write_text("{}")
    saved = {"model": {"name": "m", "backend": "vllm", "vllm": {"max_loras": 1}}, "user": {"kind": "llm"}}
    later = {
        "model": {"name": "m", "backend": "transformers", "vllm": {"max_loras": 2}},
        "user": {"kind": "llm", "adapter": "clone"},
    }
    assert set(resume_check(saved, later, tmp_path)) == {"model.backend", "model.vllm.max_loras", "user"}
    with pytest.raises(ConfigError, match=r"model\.name \('m' -> 'n'\) would change finished stages bc"):
        resume_check(saved, {**saved, "model": {**saved["model"], "name": "n"}}, tmp_path)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "done.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"user\.clone_epochs \(1 -> 2\) would change finished stages user"):
        resume_check({**saved, "user": {"clone_epochs": 1}}, {**saved, "user": {"clone_epochs": 2}}, tmp_path)


def test_the_users_clone_does_not_depend_on_the_runs_seed(tmp_path) -> None:
    """The clone trains on the training tasks' turns in ``sft.seed``'s order: a run of another
    ``seed`` may reuse a finished user stage (copied in), but not a finished behaviour cloning."""
    from trainers.stages import resume_check

    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "done.json").write_text("{}")
    assert set(resume_check({"seed": 1}, {"seed": 2}, tmp_path)) == {"seed"}
    with pytest.raises(ConfigError, match=r"sft\.seed \(0 -> 2\) would change finished stages user"):
        resume_check({"sft": {"seed": 0}}, {"sft": {"seed": 2}}, tmp_path)
    (tmp_path / "bc").mkdir()
    (tmp_path / "bc" / "done.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"seed \(1 -> 2\) would change finished stages bc"):
        resume_check({"seed": 1}, {"seed": 2}, tmp_path)
