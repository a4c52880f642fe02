"""Every shipped config loads, and a wrong key in an override is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers.config import ConfigError, RunConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    assert {p.name for p in CONFIGS} >= {
        "quickstart.yaml", "smollm2_synthetic.yaml", "gemma2_2b_ambigqa.yaml", "gemma2_9b_ambigqa.yaml",
        "qwen3_4b_ambigqa.yaml",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig) and cfg.run_dir.startswith("runs/")


@pytest.mark.parametrize("override, key", [
    ("rest.filter.best_kk=2", "rest.filter.best_kk"),
    ("sft.lora_rnak=8", "sft.lora_rnak"),
    ("evaluation.splits=[default:heldout]", "evaluation"),
])
def test_a_wrong_key_in_an_override_is_named(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown config key '{key}'"):
        load_config(CONFIGS[0], [override])


def test_a_wrong_type_in_an_override_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'rest\.iterations' must be an integer"):
        load_config(CONFIGS[0], ["rest.iterations=two"])


def test_a_value_out_of_range_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'model\.wave_tokens' must be a positive number"):
        load_config(CONFIGS[0], ["model.wave_tokens=0"])
    with pytest.raises(ConfigError, match=r"'rollout\.price_draws_per_task' must be at least 1"):
        load_config(CONFIGS[0], ["rollout.price_draws_per_task=0"])
    with pytest.raises(ConfigError, match=r"'rollout\.samples_per_group' must be a multiple of 3, got 4"):
        load_config(CONFIGS[0], ["rollout.explore_first_move=true", "rollout.samples_per_group=4"])
    with pytest.raises(ConfigError, match=r"'sft\.turn_start_weight' must be positive, got -1"):
        load_config(CONFIGS[0], ["sft.turn_start_weight=-1"])
    with pytest.raises(ConfigError, match=r"'rest\.seed_mix' must be in \[0, 1\), got 1"):
        load_config(CONFIGS[0], ["rest.seed_mix=1"])
    with pytest.raises(ConfigError, match=r"'rest\.seed_mix_move_weight' must be >= 0, got -0.5"):
        load_config(CONFIGS[0], ["rest.seed_mix_move_weight=-0.5"])
    assert load_config(CONFIGS[0], ["rest.seed_mix_move_weight=0"]).rest.seed_mix_move_weight == 0


def test_a_float_written_without_a_dot_is_read_as_a_number():
    from trainers.config import load_config

    assert load_config(None, ["sft.learning_rate=1e-4"]).sft.learning_rate == 1e-4


def test_the_final_evaluation_can_be_larger_in_some_splits_only() -> None:
    from trainers.rest import episodes_per_split

    heldout, extrapolation = "default:heldout", "default:extrapolation"
    cfg = load_config(None, [f"eval.splits=[{heldout}, {extrapolation}]", "eval.episodes_per_point=50",
                             "rest.final_episodes_per_point=1000", f"rest.final_splits=[{heldout}]"])
    assert episodes_per_split(cfg, final=True) == {heldout: 1000, extrapolation: 50}
    assert episodes_per_split(cfg, final=False) == {heldout: 50, extrapolation: 50}
    cfg = load_config(None, ["eval.episodes_per_point=50", "rest.final_episodes_per_point=1000"])
    assert set(episodes_per_split(cfg, final=True).values()) == {1000}  # no final_splits: every split
    with pytest.raises(ConfigError, match=r"'rest\.final_splits' names \['default:train'\]"):
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
