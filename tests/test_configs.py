"""Configs: every shipped one loads, and every mistake is named before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers.config import ConfigError
from trainers.config_loading import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
QUICKSTART = next(p for p in CONFIGS if p.name == "quickstart.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_runs_under_runs(path: Path) -> None:
    cfg = load_config(path, check=False)  # paper-scale configs point at data a user converts first
    assert cfg.run_dir.startswith("runs/")


def test_a_config_whose_task_file_is_missing_says_which_file_and_how_to_make_it() -> None:
    path = next(p for p in CONFIGS if p.name == "gemma2_2b_ambigqa.yaml")
    with pytest.raises(
        ConfigError,
        match=r"'env\.source': path: no such file 'data/ambigqa/train\.jsonl' "
        r"\(make it with `clarify data ambigqa --out data/ambigqa`\)",
    ):
        load_config(path)


@pytest.mark.parametrize(
    "override, key",
    [
        ("rest.filter.best_kk=2", "rest.filter.best_kk"),
        ("sft.lora_rnak=8", "sft.lora_rnak"),
        ("evaluation.splits=[default:heldout]", "evaluation"),
    ],
)
def test_a_wrong_key_in_an_override_is_named(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown config key '{key}'"):
        load_config(QUICKSTART, [override])


@pytest.mark.parametrize(
    "override, message",
    [
        ("rest.seed_mix=0.25", "config key 'rest.seed_mix' is now 'rest.replay'"),
        ("sft.turn_start_weight=5", "config key 'sft.turn_start_weight' is now 'sft.move_tag_weight'"),
        ("rest.seed_mix_fresh=true", "config key 'rest.seed_mix_fresh' was removed"),
    ],
)
def test_a_key_of_an_earlier_release_says_what_replaced_it(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(QUICKSTART, [override])


def test_a_wrong_type_in_an_override_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'rest\.iterations' must be an integer"):
        load_config(QUICKSTART, ["rest.iterations=two"])
    with pytest.raises(ConfigError, match=r"'rest\.bc\.move_weights\.ANSWER' must be a number"):
        load_config(QUICKSTART, ["rest.bc.move_weights={ANSWER: lots}"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.wave_tokens=0", r"'model\.wave_tokens' must be a positive number"),
        ("rest.iterations=-1", r"'rest\.iterations' must be at least 0, got -1"),
        ("rest.grow_episodes=-5", r"'rest\.grow_episodes' must be at least 1, got -5"),
        ("rest.filter.best_k=-1", r"'rest\.filter\.best_k' must be at least 0, got -1"),
        ("rest.replay=1", r"'rest\.replay' must be in \[0, 1\), got 1"),
        ("sft.warmup_ratio=5", r"'sft\.warmup_ratio' must be in \[0, 1\], got 5"),
        ("sft.batch_size=0", r"'sft\.batch_size' must be at least 1, got 0"),
        ("sft.grad_accumulation=0", r"'sft\.grad_accumulation' must be at least 1, got 0"),
        ("sft.logging_steps=0", r"'sft\.logging_steps' must be at least 1, got 0"),
        ("sft.epochs=0", r"'sft\.epochs' must be at least 1, got 0"),
        ("sft.move_tag_weight=-1", r"'sft\.move_tag_weight' must be a positive number, got -1"),
        ("eval.episodes_per_point=0", r"'eval\.episodes_per_point' must be at least 1, got 0"),
        ("run_dir=", r"'run_dir' must name a directory"),
        ("env.max_questions=1.5", r"'env\.max_questions' must be an integer, got 1\.5"),
        ("env.max_questions=-1", r"'env': max_questions must be a whole number >= 0, got -1"),
        ("rollout.samples_per_group=4", r"'rollout\.samples_per_group' must be a multiple of 3"),
        ("rest.bc.move_weights={ANSWER: 0, MULTI: 0, CLARIFY: 0}", r"'rest\.bc\.move_weights' must map"),
        ("env.costs={question: true, word: 0.01}", r"'env\.costs': cost 'question' must be a finite number"),
        (
            "eval.splits=[default:heldout, default:train]",
            r"'eval\.splits\[1\]': cost spec 'default:train' has no finite grid",
        ),
        ("env.source={name: synthetic, colour: red}", r"'env\.source': task source 'synthetic' takes no argument"),
    ],
)
def test_a_value_out_of_range_is_named_at_load(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(QUICKSTART, [override])


def test_a_float_written_without_a_dot_is_read_as_a_number() -> None:
    assert load_config(None, ["sft.learning_rate=1e-4"]).sft.learning_rate == 1e-4


def test_the_final_evaluation_can_be_larger_in_some_splits_only() -> None:
    from trainers.rest import episodes_per_split

    heldout, extrapolation = "default:heldout", "default:extrapolation"
    cfg = load_config(
        None,
        [
            f"eval.splits=[{heldout}, {extrapolation}]",
            "eval.episodes_per_point=50",
            "rest.final_episodes_per_point=1000",
            f"rest.final_splits=[{heldout}]",
        ],
    )
    assert episodes_per_split(cfg, final=True) == {heldout: 1000, extrapolation: 50}
    assert episodes_per_split(cfg, final=False) == {heldout: 50, extrapolation: 50}
    cfg = load_config(None, ["eval.episodes_per_point=50", "rest.final_episodes_per_point=1000"])
    assert set(episodes_per_split(cfg, final=True).values()) == {1000}  # no final_splits: every split
    with pytest.raises(ConfigError, match=r"'rest\.final_splits' must name splits of eval\.splits"):
        load_config(None, ["rest.final_splits=[default:train]"])


def test_a_missing_local_model_path_is_named_not_sent_to_the_hub(tmp_path: Path) -> None:
    from agents.model_fetch import resolve_model

    missing = tmp_path / "runs" / "q" / "policy"
    with pytest.raises(FileNotFoundError, match=r"model '.*policy': no such directory"):
        resolve_model(str(missing))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_model("../runs/quickstart/iter-2/policy")
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"  # a hub id passes through


def test_the_configuration_reference_is_generated_from_the_fields_and_up_to_date() -> None:
    from trainers.config_docs import reference

    text = reference()
    assert "| `sft.move_tag_weight` | float | `1.0` |" in text and "`rest.bc.move_weights`" in text
    written = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert written == text, "docs/configuration.md is stale: run `python -m trainers.config_docs`"
