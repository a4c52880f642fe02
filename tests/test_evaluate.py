"""Evaluation at fixed prices: statistics, oracle regret and agreement, steerability, files, CLI."""

import csv
import dataclasses
import json

import numpy as np
import pytest

from agents import AlwaysAnswer, AlwaysMulti, OraclePolicy, ScriptedUser
from clarify_env.costs import Costs
from helpers import defaults_config
from trainers.cli import main
from trainers.eval_metrics import bootstrap_ci, evaluate_episodes, spearman, task_lookup
from trainers.eval_report import EvalReport, beaten_by
from trainers.evaluate import evaluate_policy, split_points, split_specs
from trainers.rollout import RolloutEngine

GRID = {"grid": {"question": [0.0, 0.1, 0.3, 0.6, 1.0], "word": [0.0, 0.01, 0.03, 0.1]}}
ENV = {"source": "synthetic"}


def grid_points():
    return split_points([json.dumps(GRID)])


@pytest.fixture(scope="module")
def oracle_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle")
    return evaluate_policy(OraclePolicy(), grid_points(), 24, ENV, seed=0, out_dir=out, bootstrap_samples=200)


def test_bootstrap_ci_contains_the_mean_and_is_seeded():
    values = np.random.default_rng(1).normal(0.5, 0.3, size=200)
    low, high = bootstrap_ci(values, samples=500, seed=7)
    assert low < values.mean() < high and high - low < 0.2
    assert bootstrap_ci(values, samples=500, seed=7) == (low, high)
    assert bootstrap_ci(values, samples=500, seed=8) != (low, high)
    assert bootstrap_ci([0.25]) == (0.25, 0.25)


def test_oracle_episodes_have_no_regret_and_agree_with_the_oracle(oracle_report):
    for p in oracle_report.points:
        assert p.oracle_agreement == 1.0
        assert p.reward_ci_low <= p.reward <= p.reward_ci_high
        assert p.error_rate == 0.0 and p.truncation_rate == 0.0
        assert abs(p.regret) < 0.01  # CLARIFY's realised words vary with the meaning
        assert p.move_regret == pytest.approx(0.0, abs=1e-12)  # every first move is one of the oracle's best
        if p.word == 0.0:
            assert p.regret == pytest.approx(0.0, abs=1e-12)
        assert p.clarify_rate == pytest.approx(p.oracle_clarify_rate)
        assert p.oracle_reward >= max(b["reward"] for b in p.baselines.values()) - 1e-9


def test_the_oracle_is_steerable(oracle_report):
    for name, rho in oracle_report.steerability.items():
        assert rho["policy"] < -0.5, name
        assert rho["oracle"] == pytest.approx(rho["policy"], abs=0.1)


@pytest.mark.parametrize("policy", [AlwaysAnswer(), AlwaysMulti()], ids=lambda p: p.name)
def test_a_fixed_baseline_is_not_steerable_and_matches_its_exact_values(policy, tmp_path):
    report = evaluate_policy(policy, grid_points(), 12, ENV, seed=0, out_dir=tmp_path, bootstrap_samples=50)
    for rho in report.steerability.values():
        assert rho["policy"] is None or abs(rho["policy"]) < 0.3
    assert report.steerability["clarify_rate_vs_question_price"]["policy"] == 0.0  # never asks: the rate does not move
    for p in report.points:  # a final first move is scored over every meaning: exact
        assert p.expected_reward == pytest.approx(p.baselines[policy.name]["reward"])
        assert p.words == pytest.approx(p.baselines[policy.name]["words"])
        # its move's best message (the oracle's ANSWER may pick a shorter guess) costs at most what it plays
        assert p.move_regret <= p.regret + 1e-9
    assert max(p.move_regret for p in report.points) > 0.05


class MisspelledAnswer(AlwaysAnswer):
    """Answers the most likely meaning with its last letter dropped: the right move, badly executed."""

    name = "misspelled_answer"

    def first_move(self, observation, meanings):
        return super().first_move(observation, meanings)[:-1]


def test_move_regret_separates_the_choice_of_move_from_its_execution(tmp_path):
    right = evaluate_policy(
        AlwaysAnswer(), grid_points(), 12, ENV, seed=0, out_dir=tmp_path / "a", bootstrap_samples=50
    )
    wrong = evaluate_policy(
        MisspelledAnswer(), grid_points(), 12, ENV, seed=0, out_dir=tmp_path / "b", bootstrap_samples=50
    )
    for r, w in zip(right.points, wrong.points):
        assert w.move_regret == pytest.approx(r.move_regret)  # the same moves on the same tasks
        assert w.regret > w.move_regret + 0.1  # ... losing accuracy in execution
    assert "move regret" in (tmp_path / "b" / "eval.md").read_text()


def test_spearman_of_a_constant_rate_is_zero_and_short_series_are_undefined():
    assert spearman([1, 2, 3], [3, 3, 3]) == 0.0  # the rate does not move with the price
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([2, 2, 2], [1, 2, 3]) is None
    assert spearman([1, 2, 3], [1, float("nan"), 3]) is None
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_report_files_and_plots_are_written(oracle_report):
    files = oracle_report.files
    assert set(files) >= {"json", "markdown", "csv", "vs_question_price", "vs_word_price"}
    for key in ("vs_question_price", "vs_word_price"):
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with files["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and "always_multi_reward" in rows[0]
    saved = json.loads(files["json"].read_text())
    assert len(saved["points"]) == 20 and "clarify_rate_vs_question_price" in saved["steerability"]
    assert "| split | alpha | beta |" in files["markdown"].read_text()
    assert (files["json"].parent / "episodes").is_dir()


def test_synthetic_tasks_are_rebuilt_from_episode_ids():
    engine = RolloutEngine(ENV, OraclePolicy(), ScriptedUser(), num_envs=4, samples_per_group=1, seed=5)
    episodes = engine.run(4, progress=False)
    lookup = task_lookup("synthetic")
    for i, e in enumerate(episodes):
        assert lookup(e.task_id) == engine.group(i)[0]
    points = evaluate_episodes(episodes, {e.task_id: lookup(e.task_id) for e in episodes}, bootstrap_samples=20)
    assert sum(p.n for p in points) == 4


def test_split_specs_keep_json_grids_whole_and_ranges_are_refused():
    specs = split_specs('default:heldout,{"grid": {"question": [0.1, 0.5], "word": [0.01]}}')
    assert specs == ["default:heldout", '{"grid": {"question": [0.1, 0.5], "word": [0.01]}}']
    points = split_points(specs)
    assert points[specs[1]] == [Costs(0.1, 0.01), Costs(0.5, 0.01)]
    with pytest.raises(ValueError, match="default:train"):
        split_points(["default:train"])


def test_a_point_counts_against_the_policy_only_where_a_baseline_is_above_its_interval(oracle_report):
    point = oracle_report.points[0]
    inside = dataclasses.replace(point, reward_ci_high=0.5, baselines={"always_multi": {"reward": 0.49, "words": 9}})
    above = dataclasses.replace(inside, baselines={"always_multi": {"reward": 0.51, "words": 9}})
    assert beaten_by(inside) == [] and beaten_by(above) == ["always_multi"]
    report = EvalReport.from_points("p", [inside, above])
    assert report.summary()[f"{point.split}/points_below_a_baseline"] == 1.0


@pytest.mark.parametrize("policy", ["oracle", "always_clarify"])
def test_eval_cli_writes_the_table_for_a_scripted_policy(policy, tmp_path):
    out = tmp_path / policy
    code = main(
        [
            "eval",
            defaults_config(tmp_path),
            "--policy",
            policy,
            "--split",
            "default:heldout",
            "--episodes-per-point",
            "4",
            "--out",
            str(out),
            "--quiet",
            "rollout.num_envs=4",
            "eval.bootstrap_samples=50",
        ]
    )
    assert code == 0
    saved = json.loads((out / "eval.json").read_text())
    assert saved["policy"] == policy
    assert len(saved["points"]) == len(split_points(["default:heldout"])["default:heldout"])
    assert all(p["n"] == 4 for p in saved["points"])
    assert (out / "eval.csv").exists() and (out / "vs_word_price.png").exists()
    assert (out / "eval.md").read_text().startswith(f"### {policy}")


def test_eval_cli_runs_the_configured_model_under_an_sft_adapter(tmp_path):
    from transformers import AutoTokenizer

    from agents.tiny_model import build_tiny_model
    from trainers.config import SFTConfig
    from trainers.sft import build_sft_examples, train_sft

    engine = RolloutEngine(ENV, OraclePolicy(), ScriptedUser(), num_envs=8, samples_per_group=1)
    episodes = engine.run(8, progress=False)
    model = build_tiny_model(
        tmp_path / "tiny",
        [m["content"] for e in episodes for m in e.chat],
        vocab_size=400,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
    )
    examples = build_sft_examples(episodes, AutoTokenizer.from_pretrained(model), max_length=2048)
    train_sft(model, examples, tmp_path / "iter-1", SFTConfig(lora_rank=4, epochs=1, batch_size=8))
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            defaults_config(tmp_path),
            "--adapter",
            str(tmp_path / "iter-1"),
            "--split",
            '{"question": 0.1, "word": 0.01}',
            "--episodes-per-point",
            "2",
            "--out",
            str(out),
            "--quiet",
            f"model.name={model}",
            "rollout.num_envs=2",
            "sampling.max_new_tokens=8",
            "eval.bootstrap_samples=20",
        ]
    )
    assert code == 0
    saved = json.loads((out / "eval.json").read_text())
    assert saved["policy"] == "iter-1" and saved["points"][0]["n"] == 2
    assert all(e["policy"] == "iter-1" for e in map(json.loads, next((out / "episodes").glob("*.jsonl")).open()))


def test_an_evaluation_resumes_its_own_episodes_but_refuses_another_policys(tmp_path):
    points = split_points(['{"question": 0.2, "word": 0.02}'])
    first = evaluate_policy(AlwaysMulti(), points, 3, ENV, seed=0, out_dir=tmp_path, bootstrap_samples=10)
    again = evaluate_policy(AlwaysMulti(), points, 3, ENV, seed=0, out_dir=tmp_path, bootstrap_samples=10)
    assert again.points == first.points
    with pytest.raises(ValueError, match="always_multi"):
        evaluate_policy(AlwaysAnswer(), points, 3, ENV, seed=0, out_dir=tmp_path)


def test_steerability_within_each_split_is_reported_beside_the_pooled_one(oracle_report):
    """The acceptance reads the held-out prices alone: extrapolation points that reverse
    the trend must not hide it (nor be hidden by it)."""
    held = oracle_report.points
    top = max(p.question for p in held)
    beyond = [
        dataclasses.replace(p, split="far", question=p.question + top + 1, clarify_rate=1.0 - p.clarify_rate)
        for p in held
    ]
    report = EvalReport.from_points(oracle_report.policy, [*held, *beyond])
    within = report.split_steerability()
    name = "clarify_rate_vs_question_price"
    assert within[held[0].split][name] == oracle_report.steerability[name]
    assert within["far"][name]["policy"] > 0.5  # the reversed copy rises with the price
    summary = report.summary()
    assert summary[f"{held[0].split}/steerability/{name}"] == oracle_report.steerability[name]["policy"]
    assert summary[f"far/steerability/{name}"] > 0.5 and f"steerability/{name}" in summary
    assert "Within far only:" in report.to_markdown()


def test_eval_takes_its_config_as_the_first_argument_or_as_an_option(tmp_path):
    config = defaults_config(tmp_path)
    args = ["--policy", "oracle", "--split", '{"question": 0.1, "word": 0.01}', "--episodes-per-point", "2", "--quiet"]
    assert main(["eval", config, *args, "--out", str(tmp_path / "a"), "eval.bootstrap_samples=10"]) == 0
    assert main(["eval", "--config", config, *args, "--out", str(tmp_path / "b"), "eval.bootstrap_samples=10"]) == 0
    a, b = (json.loads((tmp_path / d / "eval.json").read_text()) for d in "ab")
    assert a == b


def test_episodes_per_point_can_differ_by_split(tmp_path):
    points = split_points(["default:heldout", "default:extrapolation"])
    report = evaluate_policy(
        AlwaysMulti(),
        points,
        {"default:heldout": 6, "default:extrapolation": 2},
        ENV,
        seed=0,
        out_dir=tmp_path,
        bootstrap_samples=10,
    )
    counts = {(p.split, p.n) for p in report.points}
    assert counts == {("default:heldout", 6), ("default:extrapolation", 2)}
