import dataclasses
import math

import pytest

from agents import AlwaysAnswer, OraclePolicy, ScriptedUser
from trainers.evaluate import task_lookup
from trainers.label_audit import audit_episodes
from trainers.rollout import RolloutEngine

ENV = {"source": "synthetic", "costs": "default:train"}


def play(policy, env=ENV, n=48):
    return RolloutEngine(env, policy, ScriptedUser(), num_envs=8, samples_per_group=1, seed=3).run(n, progress=False)


def test_the_oracle_agrees_with_itself_and_answers_right_after_clarifying():
    episodes = play(OraclePolicy())
    audit = audit_episodes(episodes, task_lookup("synthetic"))
    assert audit["oracle_agreement"] == 1.0
    assert any(e.first_move == "CLARIFY" for e in episodes)
    assert audit["followup_accuracy"] == 1.0
    assert 0 < audit["followup_chance"] < 1


def test_always_answer_agrees_only_where_answering_is_optimal():
    # Free questions and words: CLARIFY and MULTI always earn 1, ANSWER only on an unambiguous task.
    episodes = play(AlwaysAnswer(), {"source": "synthetic", "costs": {"question": 0.0, "word": 0.0}})
    lookup = task_lookup("synthetic")
    unambiguous = sum(len(lookup(e.task_id).interpretations) == 1 for e in episodes) / len(episodes)
    audit = audit_episodes(episodes, lookup)
    assert 0 < unambiguous < 1
    assert audit["oracle_agreement"] == unambiguous
    assert math.isnan(audit["followup_accuracy"]) and math.isnan(audit["followup_chance"])


def test_wrong_answers_after_a_clarification_lower_the_followup_accuracy():
    episodes = play(OraclePolicy())
    clarified = [e for e in episodes if e.first_move == "CLARIFY"]
    wrong = [dataclasses.replace(e, components={**e.components, "accuracy": 0.0}) for e in clarified[:1]]
    audit = audit_episodes(wrong + clarified[1:], task_lookup("synthetic"))
    assert audit["followup_accuracy"] == (len(clarified) - 1) / len(clarified)


def test_the_command_line_prints_the_confusion_and_the_followup_by_meaning_count(tmp_path, capsys):
    from trainers.episodes import EpisodeLog
    from trainers.label_audit import main

    episodes = play(OraclePolicy())
    with EpisodeLog(tmp_path / "grow.jsonl") as log:
        log.write(episodes)
    assert main([str(tmp_path / "grow.jsonl")]) == 0
    out = capsys.readouterr().out
    assert f"{len(episodes)} episodes, first move among the oracle's best in 1.000" in out
    clarified = {len(task_lookup("synthetic")(e.task_id).interpretations) for e in episodes if e.first_move == "CLARIFY"}
    for n in clarified:
        assert f"answers after CLARIFY, {n} meaning(s): 1.000 right" in out
    assert "CLARIFY" in out.splitlines()[1]


def test_the_command_line_names_a_missing_file(tmp_path, capsys):
    from trainers.label_audit import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope.jsonl")])
    assert exit_info.value.code == 2
    assert f"no such episode file: {tmp_path / 'nope.jsonl'}" in capsys.readouterr().err
