"""Real text: file sources split into train and dev by task id, behaviour cloning on human clarifying
questions and clarifications, and the model forced to each move (the fair baselines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents import ScriptedUser
from clarify_env.sources import load_clarifyingqa, make_source
from helpers import QUICKSTART, TINY, write_clarifyingqa
from trainers.cli import main
from trainers.episodes import read_episodes


def test_a_file_splits_into_train_and_dev_by_task_id(tmp_path: Path) -> None:
    path = write_clarifyingqa(tmp_path / "cq.csv", 200)
    spec = {"name": "clarifyingqa", "path": str(path)}
    train, dev, whole = (make_source({**spec, "split": s}) for s in ("train", "dev", "all"))
    ids = lambda source: [t.id for t in source]  # noqa: E731
    assert not set(ids(train)) & set(ids(dev)) and sorted(ids(train) + ids(dev)) == sorted(ids(whole))
    assert 0.2 < len(dev) / len(whole) < 0.4 and train.name == "clarifyingqa:train"
    assert ids(make_source({**spec, "split": "dev"})) == ids(dev)  # deterministic
    other = make_source({**spec, "split": "dev", "split_seed": 1})
    assert ids(other) != ids(dev)
    # a task keeps its side when other tasks are added to the file
    bigger = write_clarifyingqa(tmp_path / "bigger.csv", 300)
    assert set(ids(dev)) <= set(ids(make_source({**spec, "path": str(bigger), "split": "dev"})))
    with pytest.raises(ValueError, match="split must be one of"):
        make_source({**spec, "split": "test"})


def test_behaviour_cloning_on_real_text_asks_the_human_question_and_hears_the_human_clarification(tmp_path) -> None:
    from trainers.config_loading import load_config
    from trainers.models import make_assistant
    from trainers.rest import BCPolicy, human_questions
    from trainers.rollout import RolloutEngine

    path = write_clarifyingqa(tmp_path / "cq.csv", 30)
    cfg = load_config(QUICKSTART, [f"env.source={{name: clarifyingqa, path: {path}}}"])
    questions = human_questions(cfg)
    assert questions == {f"Who won cup number {k}?": "Which year's cup do you mean?" for k in range(30)}
    policy = BCPolicy({"CLARIFY": 1.0, "ANSWER": 1.0}, make_assistant(cfg, None), questions)
    env = {"source": {"name": "clarifyingqa", "path": str(path)}, "costs": "default:train"}
    episodes = RolloutEngine(env, policy, ScriptedUser(), num_envs=8, seed=0).run(40, None, progress=False)
    tasks = {t.id: t for t in load_clarifyingqa(path)}
    clarified = [e for e in episodes if e.first_move == "CLARIFY"]
    assert clarified
    for e in clarified:
        meaning = tasks[e.task_id].interpretations[e.interpretation]
        assert e.messages[1]["content"] == "CLARIFY: Which year's cup do you mean?"
        assert e.messages[2]["content"] == meaning.facet  # the human clarification itself
        assert e.components["accuracy"] == 1.0  # and the answer that follows is the meaning's


def test_balanced_behaviour_cloning_opens_each_group_once_with_each_move(tmp_path) -> None:
    """rest.bc.balanced: within every (task, prices) group the three dialogues open with ANSWER,
    MULTI and CLARIFY, so the moves are equally frequent at every price; the human question and
    the answer after the clarification are as in the drawn mixture."""
    import collections

    from trainers.config import ConfigError
    from trainers.config_loading import load_config
    from trainers.models import make_assistant
    from trainers.rest import BCPolicy, human_questions
    from trainers.rollout import RolloutEngine

    path = write_clarifyingqa(tmp_path / "cq.csv", 30)
    equal = "rest.bc.move_weights={ANSWER: 1, MULTI: 1, CLARIFY: 1}"
    cfg = load_config(QUICKSTART, [f"env.source={{name: clarifyingqa, path: {path}}}", "rest.bc.balanced=true", equal])
    assert cfg.rest.bc.opening_cycle() == ("ANSWER", "MULTI", "CLARIFY")
    policy = BCPolicy(cfg.rest.bc.move_weights, make_assistant(cfg, None), human_questions(cfg))
    env = {"source": {"name": "clarifyingqa", "path": str(path)}, "costs": "default:train"}
    engine = RolloutEngine(
        env, policy, ScriptedUser(), num_envs=8, samples_per_group=3, seed=0, explore_first_move=True
    )
    episodes = engine.run(60, None, progress=False)
    groups = collections.defaultdict(list)
    for e in episodes:
        groups[e.group_id].append(e.first_move)
    assert len(groups) == 20 and all(sorted(m) == ["ANSWER", "CLARIFY", "MULTI"] for m in groups.values())
    clarified = [e for e in episodes if e.first_move == "CLARIFY"]
    assert all(e.messages[1]["content"] == "CLARIFY: Which year's cup do you mean?" for e in clarified)
    assert all(e.components["accuracy"] == 1.0 for e in clarified)
    for weights in (
        "{ANSWER: 1, MULTI: 1, CLARIFY: 1.5}",
        "{ANSWER: 1, CLARIFY: 2}",
        "{ANSWER: 9, MULTI: 1, CLARIFY: 3}",
    ):
        with pytest.raises(ConfigError, match="rest.bc.balanced"):
            load_config(QUICKSTART, ["rest.bc.balanced=true", f"rest.bc.move_weights={weights}"])


def test_weighted_balanced_behaviour_cloning_opens_each_move_as_often_as_its_weight(tmp_path) -> None:
    """rest.bc.balanced with CLARIFY 2: the stage's groups hold 4 dialogues (whatever
    rollout.samples_per_group), two opening with CLARIFY, one each with ANSWER and MULTI: a start
    whose greedy first move is CLARIFY at every price."""
    import collections
    from types import SimpleNamespace

    from trainers.config_loading import load_config
    from trainers.models import make_assistant
    from trainers.rest import BCPolicy, grow, human_questions

    path = write_clarifyingqa(tmp_path / "cq.csv", 30)
    weights = "rest.bc.move_weights={ANSWER: 1, MULTI: 1, CLARIFY: 2}"
    cfg = load_config(
        QUICKSTART, [f"env.source={{name: clarifyingqa, path: {path}}}", "rest.bc.balanced=true", weights]
    )
    assert (
        cfg.rest.bc.opening_cycle() == ("ANSWER", "MULTI", "CLARIFY", "CLARIFY") and cfg.rollout.samples_per_group != 4
    )
    policy = BCPolicy(cfg.rest.bc.move_weights, make_assistant(cfg, None), human_questions(cfg))
    episodes = grow(SimpleNamespace(cfg=cfg), policy, ScriptedUser(), tmp_path / "bc.jsonl", 0, 80)
    groups = collections.defaultdict(list)
    for e in episodes:
        groups[e.group_id].append(e.first_move)
    assert len(groups) == 20
    assert all(sorted(m) == ["ANSWER", "CLARIFY", "CLARIFY", "MULTI"] for m in groups.values())
    assert [e.metadata["forced_first_move"] for e in episodes[:4]] == ["ANSWER", "MULTI", "CLARIFY", "CLARIFY"]
    assert collections.Counter(e.first_move for e in episodes) == {"CLARIFY": 40, "ANSWER": 20, "MULTI": 20}
    from trainers.rollout import RolloutEngine

    env = {"source": {"name": "clarifyingqa", "path": str(path)}, "costs": "default:train"}
    with pytest.raises(ValueError, match="opening_cycle must name moves"):
        RolloutEngine(env, policy, ScriptedUser(), explore_first_move=True, opening_cycle=["CLARIFY", "ASK"])


def test_a_run_trains_on_train_evaluates_on_dev_and_records_both(tmp_path: Path) -> None:
    path = write_clarifyingqa(tmp_path / "cq.csv", 60)
    run = tmp_path / "run"
    source = "{{name: clarifyingqa, path: {}, split: {}}}"
    overrides = [
        f"env.source={source.format(path, 'train')}",
        f"eval.source={source.format(path, 'dev')}",
        "rest.iterations=1",
        "rest.bc.episodes=64",
        "rest.grow_episodes=16",
        "wandb.enabled=false",
    ]
    assert main(["train", QUICKSTART, f"run_dir={run}", *TINY, *overrides]) == 0
    record = json.loads((run / "data.json").read_text())
    train_ids, dev_ids = set(record["train"]["ids"]), set(record["eval"]["ids"])
    assert record["train"]["name"] == "clarifyingqa:train" and not train_ids & dev_ids
    assert {e.task_id for e in read_episodes(run / "iter-1" / "grow.jsonl")} <= train_ids
    evaluated = {
        json.loads(line)["task_id"]
        for f in (run / "iter-1" / "eval" / "episodes").glob("*.jsonl")
        for line in f.read_text().splitlines()
    }
    assert evaluated <= dev_ids


def test_the_model_forced_to_each_move_is_a_policy_to_evaluate(tmp_path: Path, finished_bc_run: Path) -> None:
    run = finished_bc_run
    for move in ("ANSWER", "MULTI", "CLARIFY"):
        out = tmp_path / move
        args = [
            "eval",
            QUICKSTART,
            "--policy",
            f"forced:{move}:{run}",
            "--split",
            "default:heldout",
            "--episodes-per-point",
            "2",
            "--quiet",
            "--out",
            str(out),
            *TINY,
        ]
        assert main(args) == 0
        episodes = [json.loads(line) for f in (out / "episodes").glob("*.jsonl") for line in f.read_text().splitlines()]
        assert len(episodes) == 18 and {e["messages"][1]["content"].split(":")[0] for e in episodes} == {move}
        assert json.loads((out / "eval.json").read_text())["policy"] == f"run:bc+{move.lower()}"


def test_a_model_directory_is_a_policy_and_plays_as_its_run_does(tmp_path: Path, finished_bc_run: Path) -> None:
    """A fully fine-tuned stage's ``policy/`` folder (config.json, no run around it) evaluates as the run."""
    common = ["--split", "default:heldout", "--episodes-per-point", "2", "--quiet", *TINY]
    points = {}
    for name, spec in (("run", finished_bc_run), ("model", finished_bc_run / "bc" / "policy")):
        assert main(["eval", QUICKSTART, "--policy", str(spec), "--out", str(tmp_path / name), *common]) == 0
        points[name] = json.loads((tmp_path / name / "eval.json").read_text())["points"]
    assert points["model"] == points["run"] and sum(p["n"] for p in points["run"]) == 18


def test_one_engine_playing_both_roles_is_metered_once(tmp_path: Path, finished_bc_run: Path) -> None:
    out = tmp_path / "selfplay"
    args = ["eval", QUICKSTART, "--policy", str(finished_bc_run), "--split", "default:heldout"]
    args += ["--episodes-per-point", "1", "--quiet", "--out", str(out), *TINY, "user.kind=llm", "user.adapter=null"]
    assert main(args) == 0
    usage = json.loads((out / "eval.json").read_text())["usage"]
    assert list(usage) == ["assistant and user"] and usage["assistant and user"]["completion_tokens"] > 0
