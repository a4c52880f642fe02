"""`clarify train`: one short ReST run end to end, its resume after kills, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import trainers.sft
from test_logging import history
from trainers.cli import main
from trainers.config import ConfigError, load_config, save_config
from trainers.episodes import EpisodeLog, read_episodes
from trainers.evaluate import task_lookup
from trainers.label_audit import audit_episodes

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "quickstart.yaml")
# configs/quickstart.yaml shrunk to seconds: a 1-layer model, 256 seed dialogues, 32 grown
# episodes in groups of 4, 4 evaluation episodes per held-out price point. The seed stage
# teaches the tiny model enough of the protocol that moves and protocol errors mix.
TINY = [
    "model.tiny={hidden_size: 64, num_layers: 1, num_heads: 1, intermediate_size: 128, vocab_size: 512}",
    "model.batch_size=64", "sampling.max_new_tokens=24", "rollout.num_envs=16", "rollout.samples_per_group=4",
    "rollout.explore_first_move=false",
    "rest.seed.episodes=256", "rest.seed.epochs=2", "rest.grow_episodes=32", "rest.iterations=1",
    "rest.final_episodes_per_point=0", "rest.filter={best_k: 1, drop_protocol_errors: false}",
    "sft.batch_size=16", "sft.learning_rate=0.01", "sft.logging_steps=4",
    "eval.splits=[default:heldout]", "eval.episodes_per_point=4", "eval.bootstrap_samples=50",
]


def train(run_dir: Path, *overrides: str, resume: bool = False) -> int:
    """``clarify train configs/quickstart.yaml [--resume] run_dir=... <TINY> <overrides>``."""
    return main(["train", CONFIG, *(["--resume"] if resume else []), f"run_dir={run_dir}", *TINY, *overrides])


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials and no $WANDB_MODE: the run logs to wandb offline."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_one_short_iteration_end_to_end(tmp_path: Path, offline_wandb: None, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert train(run) == 0
    # sampling.max_new_tokens=24 is too short for some full MULTI answers: said before the run starts
    assert "[check] sampling.max_new_tokens=24 cuts the full MULTI answer of" in capsys.readouterr().out

    assert load_config(run / "config.yaml").rest.grow_episodes == 32
    for stage in ("seed", "seed/eval", "iter-1", "iter-1/eval"):
        assert (run / stage / "done.json").exists(), stage
    it = run / "iter-1"
    grown, kept = read_episodes(it / "grow.jsonl"), read_episodes(it / "kept.jsonl")
    assert len(grown) == 32 and len({e.group_id for e in grown}) == 8
    assert len(kept) == 8 and {e.group_id for e in kept} == {e.group_id for e in grown}  # the best of each group
    assert {e.policy for e in grown} == {"seed"} and {e.iteration for e in grown} == {1}
    assert (it / "policy" / "model.safetensors").exists() and (it / "policy" / "sft_metrics.json").exists()
    done = json.loads((it / "done.json").read_text())
    assert done["policy"] == {"model": "iter-1/policy", "adapter": None, "name": "iter-1"}  # relative to the run
    assert done["filter/kept"] == 8
    audit = audit_episodes(grown, task_lookup("synthetic"))  # the label audit, logged every iteration
    assert done["grow/oracle_agreement"] == audit["oracle_agreement"]
    assert done["filter/kept_oracle_agreement"] == audit_episodes(kept, task_lookup("synthetic"))["oracle_agreement"]
    for name in ("eval.json", "eval.md", "eval.csv", "vs_question_price.png", "vs_word_price.png"):
        assert (it / "eval" / name).stat().st_size > 0, name
    report = json.loads((it / "eval" / "eval.json").read_text())
    assert report["policy"] == "iter-1" and len(report["points"]) == 9 and {p["n"] for p in report["points"]} == {4}
    summary = (run / "summary.md").read_text()
    assert "## seed" in summary and "## iter-1" in summary and "### iter-1" in summary

    metrics = jsonl(run / "metrics.jsonl")
    grow = [m for m in metrics if "grow/mean_reward" in m]
    evals = {m["step"]: m for m in metrics if "eval/default:heldout/reward" in m}
    assert [m["step"] for m in grow] == [1] and grow[0]["filter/kept"] == 8 and grow[0]["grow/episodes"] == 32
    assert sorted(evals) == [0, 1]
    assert evals[1]["eval/default:heldout/reward"] == pytest.approx(
        sum(p["reward"] for p in report["points"]) / len(report["points"]))
    assert any("seed/loss" in m for m in metrics) and any("improve/loss" in m for m in metrics)
    check = next(m for m in metrics if "check/multi_cut_share" in m)
    assert check["step"] == 0 and 0 < check["check/multi_cut_share"] < 1 and check["check/multi_longest_tokens"] > 24

    run_files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    rows = history(run_files[0])
    logged = {k: v for r in rows for k, v in r.items() if k.startswith(("grow/", "eval/default:heldout/reward"))}
    assert logged["grow/mean_reward"] == grow[0]["grow/mean_reward"]
    assert any(r.get("eval/default:heldout/reward") == evals[1]["eval/default:heldout/reward"] and r["_step"] == 1
               for r in rows)


def test_explore_first_move_grows_every_move_in_every_group_but_not_the_seed_dialogues(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(run, "rollout.explore_first_move=true", "rollout.samples_per_group=3", "rest.grow_episodes=30",
                 "wandb.enabled=false") == 0
    seed = read_episodes(run / "seed" / "episodes.jsonl")
    assert all("forced_first_move" not in e.metadata for e in seed)  # the cost-blind scripted mixture
    grown = read_episodes(run / "iter-1" / "grow.jsonl")
    assert len(grown) == 30 and all(len(g) == 3 for g in _groups(grown).values())
    for e in grown:
        forced = ("ANSWER", "MULTI", "CLARIFY")[e.sample_index]
        assert e.metadata["forced_first_move"] == forced and e.messages[1]["content"].startswith(f"{forced}:")
    kept = read_episodes(run / "iter-1" / "kept.jsonl")
    for e in kept:  # the best of each group: no other move of its task and prices scored higher
        assert e.expected_reward == max(g.expected_reward for g in _groups(grown)[e.group_id])


def _groups(episodes) -> dict[str, list]:
    out: dict[str, list] = {}
    for e in episodes:
        out.setdefault(e.group_id, []).append(e)
    return out


class Kills:
    """Simulated kills (KeyboardInterrupt, as from Ctrl-C): after the first episodes are
    written to a file of a chosen name, or right after an SFT checkpoint under a chosen folder."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.episodes_file: str | None = None
        self.checkpoint_under: str | None = None
        write, save = EpisodeLog.write, trainers.sft._save_checkpoint

        def write_then_die(log: EpisodeLog, episodes) -> None:
            write(log, episodes)
            if log.path.name == self.episodes_file and log.done_ids:
                self.episodes_file = None
                raise KeyboardInterrupt

        def save_then_die(out: Path, state: dict) -> None:
            save(out, state)
            if self.checkpoint_under is not None and self.checkpoint_under in out.parts:
                self.checkpoint_under = None
                raise KeyboardInterrupt

        monkeypatch.setattr(EpisodeLog, "write", write_then_die)
        monkeypatch.setattr(trainers.sft, "_save_checkpoint", save_then_die)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_resume_after_kills_mid_grow_and_mid_improve_gives_the_same_final_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two epochs of improve: the kill comes after its first epoch's checkpoint.
    settings = ("wandb.enabled=false", "sft.epochs=2", "sft.checkpoint_steps=1")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert train(straight, *settings) == 0

    kills = Kills(monkeypatch)
    kills.episodes_file = "episodes.jsonl"  # (0) in the seed stage's dialogues
    assert train(killed, *settings) == 130
    assert 0 < lines(killed / "seed" / "episodes.jsonl") < 256 and not (killed / "seed" / "done.json").exists()

    kills.episodes_file = "grow.jsonl"  # (a) in the iteration's grow
    assert train(killed, *settings, resume=True) == 130
    assert (killed / "seed" / "done.json").exists() and not (killed / "iter-1" / "kept.jsonl").exists()
    assert 0 < lines(killed / "iter-1" / "grow.jsonl") < 32

    kills.checkpoint_under = "iter-1"  # (b) in the improve step, after a checkpoint
    assert train(killed, *settings, resume=True) == 130
    assert list((killed / "iter-1" / "policy" / "checkpoints").glob("step-*.pt"))
    assert not (killed / "iter-1" / "done.json").exists()

    assert train(killed, *settings, resume=True) == 0
    for name in ("seed/episodes.jsonl", "iter-1/grow.jsonl", "iter-1/kept.jsonl"):
        ids = [e.episode_id for e in read_episodes(killed / name)]
        assert len(ids) == len(set(ids)), f"{name} holds duplicates"
        by_id = lambda run: sorted(e.to_json() for e in read_episodes(run / name))  # noqa: E731
        assert by_id(killed) == by_id(straight), name
    assert weights(killed / "iter-1" / "policy") == weights(straight / "iter-1" / "policy")
    for name in ("seed/eval/eval.json", "iter-1/eval/eval.json", "iter-1/done.json"):
        resumed, uninterrupted = (json.loads((run / name).read_text()) for run in (killed, straight))
        resumed.pop("policy"), uninterrupted.pop("policy")  # done.json's policy paths name the run dir
        assert resumed == uninterrupted, name


def weights(folder: Path) -> dict[str, str]:
    """A digest of each tensor (a mismatch then reports names, not megabytes of bytes)."""
    import hashlib

    from safetensors.torch import load_file

    return {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in load_file(folder / "model.safetensors").items()}


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_config(load_config(CONFIG, [f"run_dir={run}", *TINY]), run / "config.yaml")
    with pytest.raises(ConfigError, match=r"differs from this config in rest\.grow_episodes \(32 -> 64\)"):
        train(run, "rest.grow_episodes=64", resume=True)


def test_train_without_resume_refuses_an_existing_run_dir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_config(load_config(CONFIG, [f"run_dir={run}", *TINY]), run / "config.yaml")
    with pytest.raises(ConfigError, match="already holds a run: pass --resume"):
        train(run)


def test_the_filter_keeping_nothing_is_a_clear_error(tmp_path: Path) -> None:
    # No seed stage: the untrained model writes nothing that parses, and the filter drops protocol errors.
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"kept none of 32 grown episodes .*loosen rest\.filter"):
        train(run, "wandb.enabled=false", "rest.seed.enabled=false", "rest.filter.drop_protocol_errors=true")
    assert len(read_episodes(run / "iter-1" / "grow.jsonl")) == 32 and not (run / "iter-1" / "done.json").exists()
    # Without a seed stage the base model is still evaluated first: ReST's starting point.
    assert json.loads((run / "start" / "eval" / "done.json").read_text())["policy"]["name"] == "base"


def test_improve_data_accumulates_earlier_kept_episodes_and_mixes_seed_dialogues(tmp_path: Path) -> None:
    from agents import OraclePolicy, ScriptedUser
    from trainers.rest import improve_data, seed_move_weights
    from trainers.rollout import RolloutEngine

    episodes = RolloutEngine({"source": "synthetic"}, OraclePolicy(), ScriptedUser(), num_envs=8, seed=0).run(30, None)
    first, second, seed = episodes[:10], episodes[10:20], episodes[20:]
    (tmp_path / "iter-1").mkdir()
    with EpisodeLog(tmp_path / "iter-1" / "kept.jsonl") as log:
        log.write(first)
    ids = lambda es: [e.episode_id for e in es]  # noqa: E731
    cfg = load_config(CONFIG, ["rest.seed_mix_fresh=false", "rest.seed_mix=0"])
    assert ids(improve_data(cfg, tmp_path, 2, second, seed)) == ids(second)  # no mixing: this iteration's only
    cfg = load_config(CONFIG, ["rest.seed_mix_fresh=false", "rest.accumulate_kept=true", "rest.seed_mix=0"])
    assert ids(improve_data(cfg, tmp_path, 2, second, seed)) == ids(first + second)
    assert ids(improve_data(cfg, tmp_path, 1, first, seed)) == ids(first)
    cfg = load_config(CONFIG, ["rest.seed_mix_fresh=false", "rest.accumulate_kept=true", "rest.seed_mix=0.2"])  # a fifth of 25: 5 seed dialogues
    mixed = improve_data(cfg, tmp_path, 2, second, seed)
    assert ids(mixed[:20]) == ids(first + second) and set(ids(mixed[20:])) <= set(ids(seed)) and len(mixed) == 25
    assert ids(improve_data(cfg, tmp_path, 2, second, seed)) == ids(mixed)  # the same draw again (resume)
    # ... whatever the order the seed dialogues come in (played, or read back after a kill)
    assert ids(improve_data(cfg, tmp_path, 2, second, seed[::-1])) == ids(mixed)
    # rest.seed_mix_move_weight: the mixed-in seed dialogues' first move tag gets that weight
    unset = load_config(CONFIG, ["rest.seed_mix_fresh=false", "rest.seed_mix=0.2", "rest.seed_mix_move_weight=null"])
    assert seed_move_weights(unset, mixed, seed) is None  # unset: every example the default
    cfg = load_config(CONFIG, ["rest.seed_mix_fresh=false", "rest.accumulate_kept=true", "rest.seed_mix=0.2", "rest.seed_mix_move_weight=0"])
    assert seed_move_weights(cfg, mixed, seed) == [None] * 20 + [0.0] * 5


def test_fresh_seed_mix_replays_other_seed_dialogues_on_each_pass_over_the_kept_ones(tmp_path: Path) -> None:
    from agents import OraclePolicy, ScriptedUser
    from trainers.rest import improve_data, improve_epochs, seed_move_weights
    from trainers.rollout import RolloutEngine

    episodes = RolloutEngine({"source": "synthetic"}, OraclePolicy(), ScriptedUser(), num_envs=8, seed=0).run(40, None)
    kept, seed = episodes[:10], episodes[10:]
    ids = lambda es: [e.episode_id for e in es]  # noqa: E731
    same = load_config(CONFIG, ["rest.seed_mix=0.25", "sft.epochs=3", "rest.seed_mix_fresh=false"])
    assert improve_epochs(same) is None and len(improve_data(same, tmp_path, 1, kept, seed)) == 13  # 10 + 3, 3 passes
    cfg = load_config(CONFIG, ["rest.seed_mix=0.25", "sft.epochs=3", "rest.seed_mix_fresh=true", "rest.seed_mix_move_weight=0"])
    assert improve_epochs(cfg) == 1  # the list holds the 3 passes
    data = improve_data(cfg, tmp_path, 1, kept, seed)
    assert ids(data[:30]) == ids(kept) * 3  # each pass over the kept episodes ...
    replayed = ids(data[30:])
    assert len(replayed) == 9 and len(set(replayed)) == 9 and set(replayed) <= set(ids(seed))  # ... with 3 other ones
    assert ids(improve_data(cfg, tmp_path, 1, kept, seed[::-1])) == ids(data)  # the same draw on resume
    assert seed_move_weights(cfg, data, seed) == [None] * 30 + [0.0] * 9
    no_mix = load_config(CONFIG, ["rest.seed_mix=0", "sft.epochs=3", "rest.seed_mix_fresh=true"])
    assert ids(improve_data(no_mix, tmp_path, 1, kept, seed)) == ids(kept) * 3


def test_seed_dialogues_with_multi_lines_lay_multi_out_one_item_a_line_and_score_the_same() -> None:
    from agents import ScriptedUser
    from trainers.models import make_assistant
    from trainers.rest import SeedPolicy
    from trainers.rollout import RolloutEngine

    played = {}
    for lines in (False, True):
        cfg = load_config(CONFIG, [f"assistant.multi_lines={str(lines).lower()}"])
        policy = SeedPolicy({"MULTI": 1.0, "CLARIFY": 1.0}, make_assistant(cfg, None), seed=0)
        played[lines] = RolloutEngine({"source": "synthetic"}, policy, ScriptedUser(), num_envs=8, seed=0).run(40, None)
    inline, lined = played[False], played[True]
    assert [e.moves for e in inline] == [e.moves for e in lined] and [e.reward for e in inline] == [e.reward for e in lined]
    multis = [(a.messages[1]["content"], b.messages[1]["content"]) for a, b in zip(inline, lined) if a.moves == ["MULTI"]]
    assert len(multis) >= 10
    for a, b in multis:
        assert a.startswith("MULTI: ") and "; " in a and b.startswith("MULTI:\n")
        assert b == "MULTI:\n" + "\n".join(a[len("MULTI: "):].split("; "))
    # What behaviour cloning trains on is what the episode recorded.
    assert all(b.chat[-1]["content"] == b.messages[-1]["content"] for b in lined if b.moves == ["MULTI"])


def test_stage_records_keep_policy_paths_relative_to_the_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run resumes from another working directory, or after its directory was moved."""
    from trainers.rest import Policy, policy_from_record, policy_record

    run = tmp_path / "runs" / "r"
    (run / "seed" / "policy").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    record = policy_record(Policy("runs/r/seed/policy", None, "seed"), Path("runs/r"))
    assert record == {"model": "seed/policy", "adapter": None, "name": "seed"}
    monkeypatch.chdir(tmp_path / "runs")  # elsewhere, the run named by its absolute path
    assert Path(policy_from_record(record, run).model).resolve() == (run / "seed" / "policy").resolve()
    moved = tmp_path / "moved"
    run.rename(moved)
    assert policy_from_record(record, moved).model == str(moved / "seed" / "policy")
    # hub ids, and paths written by older runs (relative to their working directory), stay as they are
    assert policy_record(Policy("org/model", None, "base"), moved)["model"] == "org/model"
    assert policy_from_record({"model": "org/model", "adapter": None, "name": "base"}, moved).model == "org/model"
