"""`clarify sweep`: two tiny ReST runs, their comparison table and plot, and a resumed sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import trainers.sweep
from helpers import QUICKSTART, TINY
from trainers.cli import main
from trainers.config import ConfigError
from trainers.config_loading import load_config
from trainers.episodes import EpisodeLog
from trainers.sweep import parse_run

NARROW = "env.costs={uniform: {question: {low: 0.0, high: 0.2}, word: {low: 0.0, high: 0.02}}}"


def sweep(root: Path, *extra: str) -> int:
    """``clarify sweep`` of two runs (narrow training prices vs the default ones), seed 3."""
    return main(
        [
            "--debug",
            "sweep",
            QUICKSTART,
            f"run_dir={root}",
            *TINY,
            "wandb.enabled=false",
            "--runs",
            f"narrow={NARROW},sampling.temperature=0.7",
            "default",
            "--seeds",
            "3",
            *extra,
        ]
    )


def test_a_killed_sweep_resumes_and_compares_its_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "sweep-run"
    write = EpisodeLog.write

    def kill_in_the_second_run(log: EpisodeLog, episodes) -> None:
        write(log, episodes)
        if "default-seed3" in log.path.parts and log.path.name == "grow.jsonl":
            raise KeyboardInterrupt

    monkeypatch.setattr(EpisodeLog, "write", kill_in_the_second_run)
    assert sweep(root) == 130
    assert (root / "narrow-seed3" / "summary.md").exists() and not (root / "default-seed3" / "summary.md").exists()
    monkeypatch.setattr(EpisodeLog, "write", write)
    with pytest.raises(ConfigError, match="already hold runs: pass --resume"):
        sweep(root)

    started = []
    run_rest = trainers.sweep.run_rest

    def recorded(cfg, resume):
        started.append(cfg.run_dir)
        return run_rest(cfg, resume)

    monkeypatch.setattr(trainers.sweep, "run_rest", recorded)
    assert sweep(root, "--resume") == 0
    assert started == [str(root / "default-seed3")]  # the finished run is skipped
    narrow = load_config(root / "narrow-seed3" / "config.yaml")
    assert narrow.seed == 3 and narrow.sampling.temperature == 0.7 and "uniform" in narrow.env.costs
    assert load_config(root / "default-seed3" / "config.yaml").env.costs == "default:train"

    out = root / "sweep"
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["seed"]) for r in rows] == [("narrow", "3"), ("default", "3")]
    data = json.loads((out / "sweep.json").read_text())
    assert data["plotted_split"] == "default:heldout" and len(data["runs"]) == 2
    for row in data["runs"]:
        final = json.loads((Path(row["run_dir"]) / "iter-1" / "eval" / "eval.json").read_text())
        rewards = [p["reward"] for p in final["points"]]
        assert row["default:heldout/reward"] == pytest.approx(sum(rewards) / len(rewards))
        assert {"steerability/clarify_rate_vs_question_price", "default:heldout/oracle_agreement"} <= set(row)
    table = (out / "sweep.md").read_text().splitlines()
    assert sum(line.startswith(("| narrow |", "| default |")) for line in table) == 2
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("bad.name=seed=1", "NAME of letters"),
        ("a=seed=1", "seed is set by the sweep"),
        ("a=run_dir=x", "run_dir is set by the sweep"),
    ],
)
def test_run_specs_are_checked(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_run(text)


def test_run_overrides_split_only_outside_braces() -> None:
    assert parse_run(f"narrow={NARROW},rest.iterations=2") == ("narrow", [NARROW, "rest.iterations=2"])
    assert parse_run("plain") == ("plain", [])
