"""What a hostile but realistic user does to the env, the loaders, the configs and resume: each
case is named, bounded or refused, never a silent wrong result, a deep traceback or lost work."""

from __future__ import annotations

import json
import re
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import ScriptedUser, UserSimulator
from agents.llm_user import LLMUser
from clarify_env import ClarifyEnv, Interpretation, Task, TaskError
from clarify_env.costs import CostSpecError
from clarify_env.leak_guard import contains_answer
from clarify_env.protocol import Action, ProtocolError, parse_action
from clarify_env.scoring import RulesError
from clarify_env.sources import TaskFormatError, load_ambigqa, load_clarifyingqa
from helpers import BC_ONLY, train
from trainers.episodes import Episode, EpisodeLog, read_episodes, read_finished_episodes

COLUMNS = "id,vagueQuestion,clearQuestion,clarifyingQuestion,clarification,answers\n"


# --- the protocol parser ---------------------------------------------------------------------------

PATHOLOGICAL = [
    " " * 1_000_000 + "Hello",
    "*" * 1_000_000,
    "MULTI:" + ";" * 1_000_000,
    "MULTI: " + "a: " * 300_000,
    "ANSWER" + " " * 1_000_000 + "x",
    "\n" * 1_000_000,
    "MULTI: " + "1. " * 300_000,
    " \t>" * 300_000 + "CLARIFY: x",
    "MULTI: " + ("x" * 1000 + "\n") * 1000,
    "_*`#> " * 200_000,
    "MULTI:" + " ;" * 500_000,
]


@pytest.mark.parametrize("message", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_the_parser_takes_a_megabyte_message_of_any_shape_in_well_under_a_second(message: str) -> None:
    start = time.perf_counter()
    assert isinstance(parse_action(message), (Action, ProtocolError))
    assert time.perf_counter() - start < 2.0  # a generous bound: ~0.1-0.2 s here; the quadratic regex took > 120 s


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(),
        st.sampled_from(["CLARIFY:", "ANSWER:", "MULTI:", "**MULTI**:", "1.", ";"]).flatmap(
            lambda tag: st.text().map(lambda rest: tag + rest)
        ),
    )
)
def test_the_parser_never_raises_on_ten_thousand_fuzzed_messages(text: str) -> None:
    assert isinstance(parse_action(text), (Action, ProtocolError))


# --- the leak guard -----------------------------------------------------------------------------------

ZERO_WIDTH = "\u200b"
CYRILLIC = str.maketrans({"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у"})


def disguises(answer: str) -> dict[str, str]:
    """The answer written the ways the hostile probe slipped it past the old guard."""
    words = answer.split()
    return {
        "hyphen": "-".join(words),
        "joined": "".join(words),
        "zero_width": ZERO_WIDTH.join(answer),
        "letter_spaced": " ".join(answer.replace(" ", "")),
        "decomposed": unicodedata.normalize("NFD", answer),
        "look_alike": answer.translate(CYRILLIC),
        "as_is": answer,
        "upper": answer.upper(),
    }


def synthetic_answers(n: int) -> list[str]:
    env, rng = ClarifyEnv(source="synthetic"), np.random.default_rng(0)
    answers = [i.answer for _ in range(n) for i in env.source.sample(rng).interpretations]
    accented = ["Zoë Saldaña", "José Martí", "Ångström Öberg", "Łódź", "Citroën"]
    return [a for a in answers if any(c.isalpha() for c in a)][:n] + accented


def test_the_leak_guard_blocks_every_disguise_in_two_thousand_replies() -> None:
    replies = leaks = 0
    for answer in synthetic_answers(300):
        for written in disguises(answer).values():
            for reply in (f"It is {written}, I think.", f"I mean the one where {written} won.", written):
                replies += 1
                leaks += not contains_answer(reply, [answer])
    assert replies >= 2000 and leaks == 0


def test_the_leak_guard_lets_honest_replies_through() -> None:
    env, rng = ClarifyEnv(source="synthetic"), np.random.default_rng(1)
    for _ in range(3000):  # every facet reply of the scripted user on synthetic tasks passes
        task = env.source.sample(rng)
        golds = [a for i in task.interpretations for a in i.answers]
        for interp in task.interpretations:
            assert not contains_answer(f"I mean {interp.facet}.", golds), (task.id, interp.facet)
    assert not contains_answer("I mean the planning department.", ["Ann"])  # no match inside a word


def test_the_guards_own_replacement_is_checked_whole(beast_task) -> None:
    from dataclasses import replace

    from agents.generation import Completion, GenerationBackend
    from clarify_env.dialogue import UserRequest
    from clarify_env.protocol import clarify

    class Leaky(GenerationBackend):
        tokenizer, adapters = None, {}

        def generate(self, conversations, sampling, adapter=None, seeds=None, prefixes=None):
            return [[Completion("It's I Mean It!", (1,), (), "stop")] for _ in conversations]

        def add_adapter(self, name, path):
            pass

    task = replace(beast_task, interpretations=(Interpretation("Which song?", ("I Mean It",), 1, "it"),))
    request = UserRequest("clarify", task, 0, (), parse_action(clarify("Which one?")))
    user = LLMUser(Leaky())
    [reply] = user.reply_batch([request])
    assert reply.source == "guard" and not contains_answer(reply.text, ["I Mean It"])  # not "I mean it."
    assert user.leaks_blocked == 1


# --- tasks and data files --------------------------------------------------------------------------------


def test_answers_given_as_one_string_are_refused_not_split_into_letters() -> None:
    with pytest.raises(TaskError, match=r"answers must be a list of strings .* got 'Paris'"):
        Interpretation("Capital of France?", "Paris", 1.0, "France")
    record = {
        "id": "t",
        "query": "Capital?",
        "interpretations": [{"question": "Capital of France?", "answers": "Paris", "prior": 1.0, "facet": "France"}],
    }
    with pytest.raises(TaskError, match="answers must be a list"):
        Task.from_dict(record)


@pytest.mark.parametrize(
    "body, problem",
    [
        (b'{"question": "Who?", "answers": ["A"]}\n\xff\xfe{"question": "x"}\n', r"line 2: is not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", r"line 1: is JSON nested too deeply"),
        (b'{"question": "Who?", "answers": ["\\ud800"]}\n', r"line 1: holds a lone surrogate escape"),
    ],
)
def test_malformed_json_lines_are_task_format_errors_naming_the_line(tmp_path: Path, body: bytes, problem: str) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(body)
    with pytest.raises(TaskFormatError, match=problem):
        load_ambigqa(path)


@pytest.mark.parametrize(
    "body, problem",
    [
        (
            COLUMNS.encode() + b"1,Who?,Who 1?,Which?,the first,A\n2,Wh\xffo?,Who 2?,Which?,the second,B\n",
            r"line 3: is not UTF-8",
        ),
        (COLUMNS.encode() + b"1,Who?,Who 1?,Which?," + b"x" * 140_000 + b",A\n", r"is not well-formed CSV"),
        (
            COLUMNS.encode() + b'1,Who?,Who 1?,Which?,"the first,A\n1,Who?,Who 2?,Which?,the second,B\n',
            r"(an unclosed quote\?|not well-formed CSV)",
        ),
        (
            COLUMNS.encode() + b"1,Who?,Who 1?,Which?,the first,A\n1,What?,What 2?,Which?,the second,B\n",
            r"line 3, field 'id': id '1' has another vague question than on line 2",
        ),
    ],
)
def test_malformed_clarifyingqa_files_are_task_format_errors(tmp_path: Path, body: bytes, problem: str) -> None:
    path = tmp_path / "cq.csv"
    path.write_bytes(body)
    with pytest.raises(TaskFormatError, match=problem):
        load_clarifyingqa(path)


def test_more_meanings_than_the_context_can_label_is_a_task_format_error(tmp_path: Path) -> None:
    rows = "".join(f"1,Who?,Who {k}?,Which?,the {k}th,A{k}\n" for k in range(30))
    (tmp_path / "cq.csv").write_text(COLUMNS + rows)
    with pytest.raises(TaskFormatError, match="at most 26 interpretations"):
        load_clarifyingqa(tmp_path / "cq.csv")


def test_an_episode_record_with_a_string_reward_is_named_when_read(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    record = {
        "episode_id": "g0-s0",
        "group_id": "g0",
        "sample_index": 0,
        "task_id": "t",
        "interpretation": 0,
        "costs": {},
        "messages": [],
        "chat": [],
        "moves": [],
        "reward": "high",
        "expected_reward": 0.0,
        "components": {},
        "outcome": "answered",
        "policy": "p",
    }
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"line 1: not an episode record \(field 'reward' must be a number"):
        read_episodes(path)


# --- the env ---------------------------------------------------------------------------------------------


class Raising(UserSimulator):
    def act(self, request):
        raise ConnectionError("the user's server is gone")


def test_a_user_simulator_that_raises_leaves_an_episode_to_reset_not_a_broken_env(beast_task) -> None:
    env = ClarifyEnv(user=Raising())
    env.reset(seed=0, options={"task": beast_task})
    with pytest.raises(ConnectionError):
        env.step("CLARIFY: Which one?")
    with pytest.raises(RuntimeError, match=r"episode is over: call reset\(\)"):
        env.step("ANSWER: x")
    env.user = ScriptedUser()
    env.reset(seed=0, options={"task": beast_task})
    assert env.step("CLARIFY: Which series?")[0]["messages"][-1]["role"] == "user"


@pytest.mark.parametrize(
    "rules, message",
    [
        ({"max_questions": 1.5}, r"max_questions must be a whole number >= 0, got 1\.5"),
        ({"max_questions": "2"}, r"max_questions must be a whole number >= 0, got '2'"),
        ({"accuracy_metric": "bleu"}, "accuracy_metric must be 'f1' or 'em'"),
        ({"protocol_error_penalty": float("nan")}, "protocol_error_penalty must be a finite number"),
        ({"max_turns": 3}, r"unknown rule\(s\) \['max_turns'\]"),
    ],
)
def test_bad_rules_are_named(rules: dict, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        ClarifyEnv(rules=rules)


@pytest.mark.parametrize(
    "options, error, message",
    [
        (["task"], TypeError, "reset options must be a mapping of task, costs, interpretation"),
        ({"task": 5}, TypeError, r"reset option task must be a Task or a task dict"),
        ({"costs": 0.2}, TypeError, r"reset option costs must be Costs"),
        ({"costs": {"question": "cheap", "word": 0.01}}, CostSpecError, r"cost 'question' must be a finite number"),
        ({"costs": {"question": True, "word": 0.01}}, CostSpecError, r"cost 'question' must be a finite number"),
        ({"interpretation": "0"}, TypeError, r"interpretation must be an index \(int\), got '0'"),
        ({"interpretation": 1.7}, TypeError, r"interpretation must be an index \(int\), got 1\.7"),
    ],
)
def test_bad_reset_options_say_what_was_expected(beast_task, options, error, message) -> None:
    env = ClarifyEnv()
    if isinstance(options, dict):
        options = {"task": beast_task, **options} if "task" not in options else options
    with pytest.raises(error, match=message):
        env.reset(seed=0, options=options)


# --- episode files and resume ---------------------------------------------------------------------------


def episodes(n: int) -> list[Episode]:
    from agents import OraclePolicy
    from trainers.rollout import RolloutEngine

    return RolloutEngine({"source": "synthetic"}, OraclePolicy(), ScriptedUser(), num_envs=4, seed=0).run(n, None)


def test_a_finished_stages_file_with_a_torn_last_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    with EpisodeLog(path) as log:
        log.write(episodes(6))
    assert len(read_finished_episodes(path, 6)) == 6
    path.write_bytes(path.read_bytes()[:-20])  # the last record torn
    assert len(read_episodes(path)) == 5  # a stage being written: the torn tail is its kill
    with pytest.raises(ValueError, match=r"line 6: not an episode record"):
        read_finished_episodes(path, 6)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]))  # a whole line lost
    with pytest.raises(ValueError, match=r"holds 5 episodes, but its stage finished 6"):
        read_finished_episodes(path, 6)


def test_a_torn_behaviour_cloning_file_stops_the_resume_that_would_replay_from_it(bc_run: Path) -> None:
    bc = bc_run / "bc" / "episodes.jsonl"
    bc.write_bytes(bc.read_bytes()[:-30])
    assert train(bc_run, *BC_ONLY, "rest.iterations=1", resume=True) == 2
    assert not (bc_run / "iter-1" / "done.json").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("policy", "the policy of finished stage bc) is missing"),
        ("done", "done.json is damaged"),
        ("tiny", "the tiny model is damaged"),
    ],
)
def test_deleted_or_damaged_artefacts_are_named_with_what_to_do(bc_run: Path, capsys, damage, message) -> None:
    import shutil

    run = bc_run
    if damage == "policy":
        shutil.rmtree(run / "bc" / "policy")
    elif damage == "done":
        (run / "bc" / "done.json").write_text('{"policy": {"mod')
    else:
        (run / "tiny-model" / "model.safetensors").unlink()
    capsys.readouterr()
    assert train(run, *BC_ONLY, "rest.iterations=1", resume=True) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_full_disk_during_a_checkpoint_names_the_file_and_keeps_the_last_one(tmp_path: Path, monkeypatch) -> None:
    import torch

    from trainers.sft.checkpoints import CheckpointError, save_checkpoint

    save_checkpoint(tmp_path, {"step": 1, "x": torch.zeros(2)})

    def full_disk(obj, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"cannot write the checkpoint .*step-2\.pt .*free disk space"):
        save_checkpoint(tmp_path, {"step": 2})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1.pt"]


def test_a_truncated_checkpoint_is_named(tmp_path: Path) -> None:
    import torch

    from trainers.sft.checkpoints import CheckpointError, restore_checkpoint, save_checkpoint

    save_checkpoint(tmp_path, {"step": 3, "x": torch.zeros(100)})
    path = tmp_path / "checkpoints" / "step-3.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"step-3\.pt is damaged .* delete it"):
        restore_checkpoint(path, "", None, None, None)


def test_a_full_disk_while_episodes_are_written_names_the_file_and_keeps_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "grow.jsonl"
    played = episodes(3)
    log = EpisodeLog(path)
    log.write(played[:2])

    class FullDisk:
        def __init__(self, file):
            self.file = file

        def write(self, text):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.file, name)

    log._file = FullDisk(log._file)
    with pytest.raises(OSError, match=rf"cannot write episodes to {path} .*No space left on device.*resume"):
        log.write(played[2:])
    log.close()
    assert [e.episode_id for e in read_episodes(path)] == [e.episode_id for e in played[:2]]


def test_an_unwritable_checkpoint_folder_is_named(tmp_path: Path, monkeypatch) -> None:
    import torch

    from trainers.sft.checkpoints import CheckpointError, save_checkpoint

    def denied(obj, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "save", denied)
    with pytest.raises(CheckpointError, match=r"cannot write the checkpoint .*step-1\.pt"):
        save_checkpoint(tmp_path, {"step": 1})


# --- the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "configs/quickstart.yaml", "rest.iterations=-1"], "'rest.iterations' must be at least 0"),
        (["train", "configs/quickstart.yaml", "sft.lora_rnak=8"], "unknown config key 'sft.lora_rnak'"),
        (["train", "nope.yaml"], "config file nope.yaml does not exist"),
        (["eval", "configs/gemma2_2b_ambigqa.yaml"], "no such file 'data/ambigqa/train.jsonl'"),
        (["audit", "nowhere.jsonl"], "no such episode file: nowhere.jsonl"),
    ],
)
def test_a_user_error_is_one_line_and_exit_code_2(monkeypatch, capsys, args: list, message: str) -> None:
    from trainers.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(Exception, match=re.escape(message)):
        main(["--debug", *args])  # the traceback when asked for


def test_another_distributions_agents_package_on_the_path_is_a_one_line_error(tmp_path: Path) -> None:
    """openai-agents (which verifiers' default install pulls in) owns the top-level name `agents` too."""
    import os
    import subprocess
    import sys

    shadow = tmp_path / "shadow" / "agents"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("from agents.function_schema import function_schema\n")
    code = "import sys; from trainers.cli import main; sys.exit(main(['eval', '--help']))"
    run = lambda path: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    shadowed = run(str(tmp_path / "shadow"))
    assert shadowed.returncode == 2, shadowed.stderr
    assert str(shadow / "__init__.py") in shadowed.stderr and "pip uninstall openai-agents" in shadowed.stderr
    assert len(shadowed.stderr.strip().splitlines()) == 1
    plain = run("")
    assert plain.returncode == 0 and "--policy" in plain.stdout, plain.stderr
