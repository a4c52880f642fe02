"""The label audit (logged every iteration) and `clarify audit` (labels and execution)."""

import collections
import dataclasses
import json
import math

import yaml

from agents import AlwaysAnswer, AlwaysClarify, OraclePolicy, RandomMixture, ScriptedUser
from helpers import clarifyingqa_file
from trainers.audit import audit_episodes, audit_rows, execution_audit
from trainers.cli import main
from trainers.episodes import EpisodeLog, read_episodes
from trainers.eval_metrics import task_lookup
from trainers.price_response import price_response
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


def test_the_oracles_moves_are_carried_out_without_loss_and_a_slipped_copy_is_counted():
    episodes = play(OraclePolicy(), n=96)
    tasks = task_lookup("synthetic")
    audit = execution_audit(episodes, tasks)
    assert audit["multi"] > 0 and audit["multi_exact"] == 1.0 and audit["multi_errors"] == {}
    assert audit["execution_loss"]["ANSWER"] == audit["execution_loss"]["MULTI"] == 0.0 and audit["move_regret"] == 0.0
    assert audit["after_clarify_accuracy"] == 1.0
    multi = next(e for e in episodes if e.first_move == "MULTI" and len(e.messages[1]["content"].split("; ")) > 1)
    message = multi.messages[1]["content"]
    cut = message[: message.rindex(";")]  # the last item lost
    slipped = dataclasses.replace(multi, messages=[multi.messages[0], {"role": "assistant", "content": cut}])
    audit = execution_audit([slipped], tasks)
    assert audit["multi_exact"] == 0.0 and audit["multi_errors"] == {"items": 1}


def test_the_user_audit_counts_replies_that_name_the_users_own_meaning():
    from trainers.audit import user_audit

    episodes = play(OraclePolicy(), n=96)
    audit = user_audit(episodes, task_lookup("synthetic"))
    clarified = sum(e.first_move == "CLARIFY" for e in episodes)
    assert audit["user_replies"] == clarified > 0
    assert audit["user_names_own_meaning"] == 1.0 and audit["user_guarded"] == 0.0  # the scripted user names its facet
    first = next(e for e in episodes if e.first_move == "CLARIFY")
    wrong = dataclasses.replace(
        first, messages=[*first.messages[:2], {"role": "user", "content": "No idea, sorry."}, *first.messages[3:]]
    )
    assert user_audit([wrong], task_lookup("synthetic"))["user_names_no_meaning"] == 1.0


def test_clarify_audit_of_an_episode_file_writes_audit_json_beside_it(tmp_path, capsys):
    episodes = play(OraclePolicy())
    with EpisodeLog(tmp_path / "grow.jsonl") as log:
        log.write(episodes)
    assert main(["audit", str(tmp_path / "grow.jsonl")]) == 0
    report = json.loads((tmp_path / "audit.json").read_text())
    assert report["label"]["oracle_agreement"] == 1.0 and report["label"]["followup_accuracy"] == 1.0
    assert report["execution"]["episodes"] == len(episodes) and report["execution"]["multi_exact"] == 1.0


def test_clarify_audit_names_a_missing_target_in_one_line(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "nope.jsonl" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_clarify_audit_of_a_run_reads_its_evaluation_tasks_from_eval_source(tmp_path):
    """A run that trains on one split and evaluates on another: `clarify audit RUN` looks the
    evaluation episodes' tasks up in ``eval.source`` (they are not in ``env.source``)."""
    source = {"name": "clarifyingqa", "path": str(clarifyingqa_file()), "mode": "open"}
    train, dev = {**source, "split": "train"}, {**source, "split": "dev"}
    run = tmp_path / "run"
    (run / "iter-1" / "eval" / "episodes").mkdir(parents=True)
    config = {"env": {"source": train, "costs": "default:train"}, "eval": {"source": dev}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    episodes = play(OraclePolicy(), env={"source": dev, "costs": "default:train"}, n=16)
    with EpisodeLog(run / "iter-1" / "eval" / "episodes" / "default-heldout_q0.25_w0.025.jsonl") as log:
        log.write(episodes)
    assert main(["audit", str(run)]) == 0
    report = json.loads((run / "audit.json").read_text())
    assert report["execution"]["episodes"] == 16 and report["label"]["oracle_agreement"] == 1.0


def test_clarify_audit_of_an_evaluation_folder_inside_a_run_reads_all_its_points(tmp_path):
    """`clarify eval --out RUN/eval-100`: the folder's episodes, every point, tasks from the run's eval.source."""
    source = {"name": "clarifyingqa", "path": str(clarifyingqa_file()), "mode": "open"}
    run = tmp_path / "run"
    folder = run / "eval-100" / "episodes"
    folder.mkdir(parents=True)
    config = {
        "env": {"source": {**source, "split": "train"}, "costs": "default:train"},
        "eval": {"source": {**source, "split": "dev"}},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for point in ("q0.05_w0.025", "q0.45_w0.025"):
        with EpisodeLog(folder / f"default-heldout_{point}.jsonl") as log:
            log.write(play(OraclePolicy(), env={"source": {**source, "split": "dev"}, "costs": "default:train"}, n=8))
    assert main(["audit", str(run / "eval-100")]) == 0
    report = json.loads((run / "eval-100" / "audit.json").read_text())
    assert report["execution"]["episodes"] == 16 and report["label"]["oracle_agreement"] == 1.0


def test_clarify_audit_outside_a_run_asks_for_the_source_and_reads_it_as_a_config_would(tmp_path, capsys):
    """`clarify eval --out DIR` outside a run: no config names the tasks, so a file source's
    episodes get a one-line error asking for --source, which takes the mapping a config's
    env.source holds (YAML flow or JSON)."""
    source = {"name": "clarifyingqa", "path": str(clarifyingqa_file()), "mode": "open", "split": "dev"}
    folder = tmp_path / "eval-scripted" / "episodes"
    folder.mkdir(parents=True)
    with EpisodeLog(folder / "default-heldout_q0.25_w0.025.jsonl") as log:
        log.write(play(OraclePolicy(), env={"source": source, "costs": "default:train"}, n=8))
    target = str(tmp_path / "eval-scripted")
    assert main(["audit", target]) == 2
    err = capsys.readouterr().err
    assert "pass --source" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    flow = f"{{name: clarifyingqa, path: {source['path']}, mode: open, split: dev}}"
    for given in (flow, json.dumps(source)):
        assert main(["audit", target, "--source", given]) == 0
        report = json.loads((tmp_path / "eval-scripted" / "audit.json").read_text())
        assert report["execution"]["episodes"] == 8 and report["label"]["oracle_agreement"] == 1.0


def test_the_answer_after_clarify_is_split_by_the_number_of_meanings():
    episodes = play(OraclePolicy(), n=96)
    tasks = task_lookup("synthetic")
    clarified = [e for e in episodes if e.first_move == "CLARIFY" and e.outcome == "answered"]
    wrong = dataclasses.replace(clarified[0], components={**clarified[0].components, "accuracy": 0.0})
    n_wrong = len(tasks(wrong.task_id).interpretations)
    audit = execution_audit([wrong, *clarified[1:]], tasks)
    counts = collections.Counter(len(tasks(e.task_id).interpretations) for e in clarified)
    assert audit["after_clarify_by_meanings"] == dict(sorted(counts.items()))
    assert audit["after_clarify_accuracy_by_meanings"][n_wrong] == (counts[n_wrong] - 1) / counts[n_wrong]
    assert all(v == 1.0 for n, v in audit["after_clarify_accuracy_by_meanings"].items() if n != n_wrong)


def sweep_episodes(make_policy, n=40):
    """The same ``n`` synthetic episodes at 5 question prices (word 0.025) and 4 more word prices."""
    points = [(q, 0.025) for q in (0.05, 0.15, 0.25, 0.35, 0.45)] + [(0.25, w) for w in (0.005, 0.015, 0.035, 0.045)]
    episodes = []
    for q, w in points:
        env = {"source": "synthetic", "costs": {"question": q, "word": w}}
        engine = RolloutEngine(env, make_policy(), ScriptedUser(), num_envs=8, samples_per_group=1, seed=3)
        episodes += engine.run(n, progress=False)
    return episodes


def test_the_price_response_separates_a_steered_policy_from_a_blind_one_and_from_chance():
    oracle = sweep_episodes(OraclePolicy)
    response = price_response(oracle, [r["oracle"] for r in audit_rows(oracle, task_lookup("synthetic"))])
    for name, price in [("clarify_rate_vs_question_price", "question"), ("multi_rate_vs_word_price", "word")]:
        r = response[name]
        assert r[price] == sorted(r[price]) and len(r[price]) == 5 and r["episodes"] == 40
        assert r["change"] == r["oracle_change"] < -0.5 and r["change_ci"][1] < 0, r
    blind = price_response(sweep_episodes(AlwaysClarify))["clarify_rate_vs_question_price"]
    assert blind["rates"] == [1.0] * 5 and blind["change"] == 0 and blind["change_ci"] == [0, 0]
    assert blind["unchanged"] == 1.0 and blind["oracle_change"] is None
    # moves drawn at random anew at each point, blind to the prices: the rates differ by chance,
    # the interval holds 0 (one seed per point: one seed at all points would replay the same moves)
    seeds = iter(range(10))
    chance = price_response(sweep_episodes(lambda: RandomMixture(seed=next(seeds))))
    for r in chance.values():
        assert len(set(r["rates"])) > 1 and r["unchanged"] < 0.5
        assert r["change_ci"][0] < 0 < r["change_ci"][1], r


def test_clarify_audit_of_an_evaluation_folder_reads_the_source_and_rules_its_eval_json_records(tmp_path):
    """An evaluation outside a run records what it scored on (eval.json's ``scored_on``), so
    `clarify audit DIR` needs no --source and audits under the evaluation's rules, not the
    defaults: the oracle without questions (``max_questions: 0``) agrees with itself."""
    from clarify_env.costs import Costs
    from clarify_env.scoring import Rules
    from trainers.evaluate import evaluate_policy

    source = {"name": "clarifyingqa", "path": str(clarifyingqa_file()), "mode": "open", "split": "dev"}
    env = {"source": source, "rules": {"max_questions": 0}}
    out = tmp_path / "eval-oracle"
    points = {"default:heldout": [Costs(0.05, 0.025), Costs(0.05, 0.045)]}
    evaluate_policy(OraclePolicy(Rules(max_questions=0)), points, 16, env, seed=0, out_dir=out, bootstrap_samples=10)
    assert json.loads((out / "eval.json").read_text())["scored_on"]["rules"]["max_questions"] == 0
    assert main(["audit", str(out)]) == 0
    assert json.loads((out / "audit.json").read_text())["label"]["oracle_agreement"] == 1.0
    # the same episodes audited under the default rules (one question allowed) disagree somewhere
    default = audit_episodes(
        [e for f in (out / "episodes").glob("*.jsonl") for e in read_episodes(f)], task_lookup(source)
    )
    assert default["oracle_agreement"] < 1.0
