"""Run logging: metrics.jsonl always, wandb offline by default with the metrics in its run files."""

import json

import pytest

from agents import OraclePolicy
from helpers import history, jsonl, wandb_records
from trainers.config import RunConfig
from trainers.episodes import read_episodes
from trainers.evaluate import evaluate_policy, split_points
from trainers.run_logging import ID_FILE, RunLogger, resolve_mode


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """No $WANDB_MODE, no API key, no netrc: the default is offline."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_mode_is_offline_unless_set_or_logged_in(no_credentials, monkeypatch, tmp_path):
    assert resolve_mode() == "offline"
    assert resolve_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode() == "disabled"
    monkeypatch.setenv("WANDB_MODE", "")  # set but empty: unset
    assert resolve_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "offlne")
    with pytest.raises(ValueError, match=r"\$WANDB_MODE is 'offlne'"):
        resolve_mode()
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".netrc").write_text("machine api.wandb.ai login user password secret\n")
    (tmp_path / "home" / ".netrc").chmod(0o600)
    assert resolve_mode() == "online"
    with pytest.raises(ValueError, match="wandb mode"):
        resolve_mode("cloud")


@pytest.mark.parametrize("empty_mode", [False, True])
def test_offline_wandb_run_files_hold_the_metrics_that_metrics_jsonl_mirrors(
    no_credentials, monkeypatch, tmp_path, empty_mode
):
    if empty_mode:  # `WANDB_MODE= clarify train ...`: set but empty counts as unset
        monkeypatch.setenv("WANDB_MODE", "")
    run_dir = tmp_path / "run"
    with RunLogger(run_dir, RunConfig(seed=3)) as logger:
        assert logger.mode == "offline"
        logger.log({"rest/kept": 12, "sft/loss": 1.5}, step=0)
        logger.log({"rest/kept": 30, "sft/loss": 0.75}, step=1)
        logger.log_table("kept", [{"group": "g0", "reward": 0.9}], step=1)
    run_files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    rows = history(run_files[0])
    assert [(r["_step"], r["rest/kept"], r["sft/loss"]) for r in rows] == [(0, 12, 1.5), (1, 30, 0.75)]
    assert rows[1]["kept/_type"] == "table-file"  # the table rides on step 1
    run = next(r.run for r in wandb_records(run_files[0]) if r.WhichOneof("record_type") == "run")
    assert {u.key: json.loads(u.value_json) for u in run.config.update}["seed"] == 3
    mirrored = jsonl(run_dir / "metrics.jsonl")
    assert [(m["step"], m["rest/kept"], m["sft/loss"]) for m in mirrored] == [(0, 12, 1.5), (1, 30, 0.75)]
    assert jsonl(run_dir / "tables.jsonl") == [{"step": 1, "key": "kept", "rows": [{"group": "g0", "reward": 0.9}]}]


def test_evaluation_dialogues_and_plots_are_logged(no_credentials, tmp_path):
    report = evaluate_policy(
        OraclePolicy(),
        split_points(["default:heldout"]),
        4,
        {"source": "synthetic"},
        0,
        tmp_path / "eval",
        num_envs=4,
        bootstrap_samples=20,
    )
    episodes_file = next((tmp_path / "eval" / "episodes").glob("*.jsonl"))
    run_dir = tmp_path / "run"
    with RunLogger(run_dir, {"seed": 0}) as logger:
        logger.log_eval(report, step=2)
        logger.log_dialogues("samples", read_episodes(episodes_file), step=2, limit=3)
        run_id = logger.run.id
    metrics = jsonl(run_dir / "metrics.jsonl")[0]
    assert metrics["eval/default:heldout/oracle_agreement"] == 1.0
    tables = {t["key"]: t["rows"] for t in jsonl(run_dir / "tables.jsonl")}
    assert len(tables["eval/table"]) == len(report.points) and len(tables["samples"]) == 3
    assert "USER:" in tables["samples"][0]["transcript"]
    images = jsonl(run_dir / "images.jsonl")
    assert {i["key"] for i in images} == {"eval/vs_question_price", "eval/vs_word_price"}
    assert len(list(run_dir.glob(f"wandb/offline-run-*-{run_id}/files/media/images/**/*.png"))) == 2
    rows = history(next(run_dir.glob(f"wandb/offline-run-*-{run_id}/run-*.wandb")))
    assert rows[0]["eval/default:heldout/oracle_agreement"] == 1.0

    with RunLogger(run_dir, {"seed": 0}) as again:  # a resumed run keeps its wandb id
        assert again.run.id == run_id == (run_dir / ID_FILE).read_text()


def test_without_wandb_only_the_json_lines_are_written(tmp_path):
    with RunLogger(tmp_path / "run", use_wandb=False) as logger:
        logger.log({"loss": 1.0}, step=0)
    assert not (tmp_path / "run" / "wandb").exists()
    assert jsonl(tmp_path / "run" / "metrics.jsonl")[0]["loss"] == 1.0
