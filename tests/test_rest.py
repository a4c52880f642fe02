"""`clarify train`: short ReST runs end to end (the quickstart's recipe and the config defaults),
resume after kills, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import trainers.sft.loop
from helpers import BC_ONLY, QUICKSTART, TINY, defaults_config, history, jsonl, train
from trainers.audit import audit_episodes
from trainers.cli import main
from trainers.config import ConfigError
from trainers.config_loading import load_config, save_config
from trainers.episodes import EpisodeLog, read_episodes
from trainers.eval_metrics import task_lookup
from trainers.rest import improve_data


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials and no $WANDB_MODE: the run logs to wandb offline."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_one_short_iteration_end_to_end(tmp_path: Path, offline_wandb: None) -> None:
    run = tmp_path / "run"
    assert train(run) == 0

    assert load_config(run / "config.yaml").rest.grow_episodes == 32
    for stage in ("bc", "bc/eval", "iter-1", "iter-1/eval"):
        assert (run / stage / "done.json").exists(), stage
    it = run / "iter-1"
    grown, kept = read_episodes(it / "grow.jsonl"), read_episodes(it / "kept.jsonl")
    assert len(grown) == 32 and len({e.group_id for e in grown}) == 8
    assert len(kept) == 8 and {e.group_id for e in kept} == {e.group_id for e in grown}  # the best of each group
    assert {e.policy for e in grown} == {"bc"} and {e.iteration for e in grown} == {1}
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
    assert "## bc" in summary and "## iter-1" in summary and "### iter-1" in summary

    metrics = jsonl(run / "metrics.jsonl")
    grow = [m for m in metrics if "grow/mean_reward" in m]
    evals = {m["step"]: m for m in metrics if "eval/default:heldout/reward" in m}
    assert [m["step"] for m in grow] == [1] and grow[0]["filter/kept"] == 8 and grow[0]["grow/episodes"] == 32
    assert sorted(evals) == [0, 1]
    assert evals[1]["eval/default:heldout/reward"] == pytest.approx(
        sum(p["reward"] for p in report["points"]) / len(report["points"])
    )
    assert any("bc/loss" in m for m in metrics) and any("improve/loss" in m for m in metrics)
    # sampling.max_new_tokens=24 is too short for some full MULTI answers: measured before the run starts
    check = next(m for m in metrics if "check/multi_cut_share" in m)
    assert check["step"] == 0 and 0 < check["check/multi_cut_share"] < 1 and check["check/multi_longest_tokens"] > 24

    run_files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    rows = history(run_files[0])
    logged = {k: v for r in rows for k, v in r.items() if k.startswith(("grow/", "eval/default:heldout/reward"))}
    assert logged["grow/mean_reward"] == grow[0]["grow/mean_reward"]
    assert any(
        r.get("eval/default:heldout/reward") == evals[1]["eval/default:heldout/reward"] and r["_step"] == 1
        for r in rows
    )


@pytest.fixture(scope="module")
def protocol_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model that already writes protocol messages in the full prompt: fully fine-tuned on
    behaviour-cloning dialogues (the starting point a user brings, as an instruct model is)."""
    from transformers import AutoTokenizer

    from agents import ScriptedUser
    from agents.tiny_model import build_tiny_model
    from trainers.config import SFTConfig
    from trainers.config_loading import load_config as load
    from trainers.models import make_assistant, tiny_corpus
    from trainers.rest import BCPolicy
    from trainers.rollout import RolloutEngine
    from trainers.sft import build_sft_examples, train_sft

    root = tmp_path_factory.mktemp("protocol-model")
    model = build_tiny_model(
        root / "base",
        tiny_corpus(200),
        vocab_size=512,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
    )
    prompt = make_assistant(load(None), None)
    played = RolloutEngine(
        {"source": "synthetic"},
        BCPolicy({"ANSWER": 1, "MULTI": 1, "CLARIFY": 1}, prompt),
        ScriptedUser(),
        num_envs=64,
        seed=0,
    ).run(320, None, progress=False)
    examples = build_sft_examples(played, AutoTokenizer.from_pretrained(model), 1024)
    config = SFTConfig(lora=False, learning_rate=1e-2, epochs=2, batch_size=16, packing=True, logging_steps=20)
    return train_sft(model, examples, root / "tuned", config).path


def test_the_config_defaults_train_end_to_end_shrunk_only_in_sizes(tmp_path: Path, protocol_model: Path) -> None:
    """Every default (full prompt, LoRA behaviour cloning and improve steps, AdamW, two ReST-EM
    iterations, both evaluation grids) from a model that follows the protocol."""
    run = tmp_path / "run"
    sizes = [
        f"model.name={protocol_model}",
        "rest.bc.episodes=64",
        "rest.grow_episodes=16",
        "eval.episodes_per_point=2",
        "rollout.num_envs=16",
        "eval.bootstrap_samples=20",
        "sampling.max_new_tokens=40",
        "wandb.enabled=false",
    ]
    assert main(["train", defaults_config(tmp_path), f"run_dir={run}", *sizes]) == 0
    cfg = load_config(run / "config.yaml")
    assert cfg.sft.lora and cfg.assistant.prompt_style == "full" and cfg.rest.iterations == 2
    for stage in ("bc", "bc/eval", "iter-1", "iter-1/eval", "iter-2", "iter-2/eval"):
        assert (run / stage / "done.json").exists(), stage
    assert (run / "iter-2" / "policy" / "adapter_model.safetensors").exists()  # LoRA: an adapter
    report = json.loads((run / "iter-2" / "eval" / "eval.json").read_text())
    assert {p["split"] for p in report["points"]} == {"default:heldout", "default:extrapolation"}
    assert len(read_episodes(run / "iter-2" / "grow.jsonl")) == 16


def test_explore_first_move_grows_every_move_in_every_group_and_relabelling_adds_their_picks_at_new_prices(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    assert (
        train(
            run,
            "rollout.explore_first_move=true",
            "rollout.samples_per_group=3",
            "rest.grow_episodes=30",
            "rest.relabel_prices=2",
            "wandb.enabled=false",
        )
        == 0
    )
    bc = read_episodes(run / "bc" / "episodes.jsonl")
    assert all("forced_first_move" not in e.metadata for e in bc)  # the cost-blind scripted mixture
    grown = read_episodes(run / "iter-1" / "grow.jsonl")
    assert len(grown) == 30 and all(len(g) == 3 for g in _groups(grown).values())
    for e in grown:
        forced = ("ANSWER", "MULTI", "CLARIFY")[e.sample_index]
        assert e.metadata["forced_first_move"] == forced and e.messages[1]["content"].startswith(f"{forced}:")
    kept = read_episodes(run / "iter-1" / "kept.jsonl")
    for e in kept:  # the best of each group: no other move of its task and prices scored higher
        assert e.expected_reward == max(g.expected_reward for g in _groups(grown)[e.group_id])
    # hindsight price relabelling: each group's pick at 2 fresh training prices joins the improve data
    relabelled = read_episodes(run / "iter-1" / "relabelled.jsonl")
    done = json.loads((run / "iter-1" / "done.json").read_text())
    assert 0 < len(relabelled) <= 2 * len(_groups(grown)) and done["filter/relabelled"] == len(relabelled)
    assert {e.metadata["relabelled_from"] for e in relabelled} <= {e.episode_id for e in grown}
    sft = json.loads((run / "iter-1" / "policy" / "sft_metrics.json").read_text())
    cfg = load_config(run / "config.yaml")
    with_relabelled, kept_only = improve_data(cfg, 1, [*kept, *relabelled], bc), improve_data(cfg, 1, kept, bc)
    assert sft["examples"] == len(with_relabelled.episodes) > len(kept_only.episodes)


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
        write, save = EpisodeLog.write, trainers.sft.loop.save_checkpoint

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
        monkeypatch.setattr(trainers.sft.loop, "save_checkpoint", save_then_die)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_resume_after_kills_mid_grow_and_mid_improve_gives_the_same_final_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two epochs of improve: the kill comes after its first epoch's checkpoint. Float32 generation:
    # the guarantee is exact there (bf16 weights: test_a_resumed_bf16_grow_redraws_the_same_episodes...).
    settings = ("wandb.enabled=false", "sft.epochs=2", "sft.checkpoint_steps=1", "model.dtype=float32")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert train(straight, *settings) == 0

    kills = Kills(monkeypatch)
    kills.episodes_file = "episodes.jsonl"  # (0) in the behaviour-cloning dialogues
    assert train(killed, *settings) == 130
    assert 0 < lines(killed / "bc" / "episodes.jsonl") < 256 and not (killed / "bc" / "done.json").exists()

    kills.episodes_file = "grow.jsonl"  # (a) in the iteration's grow
    assert train(killed, *settings, resume=True) == 130
    assert (killed / "bc" / "done.json").exists() and not (killed / "iter-1" / "kept.jsonl").exists()
    assert 0 < lines(killed / "iter-1" / "grow.jsonl") < 32

    kills.checkpoint_under = "iter-1"  # (b) in the improve step, after a checkpoint
    assert train(killed, *settings, resume=True) == 130
    assert list((killed / "iter-1" / "policy" / "checkpoints").glob("step-*.pt"))
    assert not (killed / "iter-1" / "done.json").exists()

    assert train(killed, *settings, resume=True) == 0
    for name in ("bc/episodes.jsonl", "iter-1/grow.jsonl", "iter-1/kept.jsonl"):
        ids = [e.episode_id for e in read_episodes(killed / name)]
        assert len(ids) == len(set(ids)), f"{name} holds duplicates"
        assert sorted(e.to_json() for e in read_episodes(killed / name)) == sorted(
            e.to_json() for e in read_episodes(straight / name)
        ), name
    assert weights(killed / "iter-1" / "policy") == weights(straight / "iter-1" / "policy")
    for name in ("bc/eval/eval.json", "iter-1/eval/eval.json", "iter-1/done.json"):
        resumed, uninterrupted = (json.loads((run / name).read_text()) for run in (killed, straight))
        resumed.pop("policy"), uninterrupted.pop("policy")  # done.json's policy paths name the run dir
        assert resumed == uninterrupted, name


def weights(folder: Path) -> dict[str, str]:
    """A digest of each tensor (a mismatch then reports names, not megabytes of bytes)."""
    import hashlib

    from safetensors.torch import load_file

    return {
        k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in load_file(folder / "model.safetensors").items()
    }


def test_resume_refuses_a_change_that_alters_a_finished_stage_and_takes_one_that_does_not(bc_run: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"rest\.bc\.episodes \(256 -> 300\) would change finished stages bc, bc/eval"
    ):
        train(bc_run, *BC_ONLY, "rest.bc.episodes=300", resume=True, debug=True)
    with pytest.raises(ConfigError, match=r"eval\.episodes_per_point \(4 -> 5\) would change finished stages bc/eval"):
        train(bc_run, *BC_ONLY, "eval.episodes_per_point=5", resume=True, debug=True)
    # more iterations and another grow size touch no finished stage: the run goes on with them
    assert train(bc_run, *BC_ONLY, "rest.iterations=1", "rest.grow_episodes=16", resume=True) == 0
    assert load_config(bc_run / "config.yaml").rest.grow_episodes == 16
    assert len(read_episodes(bc_run / "iter-1" / "grow.jsonl")) == 16


def test_a_moved_run_directory_resumes(bc_run: Path, finished_bc_run: Path) -> None:
    assert load_config(bc_run / "config.yaml").run_dir == str(finished_bc_run)  # the copy is a moved run
    assert train(bc_run, *BC_ONLY, "rest.iterations=1", resume=True) == 0
    assert (bc_run / "iter-1" / "done.json").exists() and load_config(bc_run / "config.yaml").run_dir == str(bc_run)


def test_train_without_resume_refuses_an_existing_run_dir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_config(load_config(QUICKSTART, [f"run_dir={run}", *TINY]), run / "config.yaml")
    with pytest.raises(ConfigError, match="already holds a run: pass --resume"):
        main(["--debug", "train", QUICKSTART, f"run_dir={run}", *TINY])
    assert train(run) == 2  # without --debug: one line, exit code 2


def test_the_filter_keeping_nothing_is_a_clear_error(tmp_path: Path) -> None:
    # No behaviour cloning: the untrained model writes nothing that parses, and the filter drops protocol errors.
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"kept none of 32 grown episodes .*loosen rest\.filter"):
        train(run, "wandb.enabled=false", "rest.bc.enabled=false", "rest.filter.drop_protocol_errors=true")
    assert len(read_episodes(run / "iter-1" / "grow.jsonl")) == 32 and not (run / "iter-1" / "done.json").exists()
    # Without behaviour cloning the base model is still evaluated first: ReST's starting point.
    assert json.loads((run / "start" / "eval" / "done.json").read_text())["policy"]["name"] == "base"


def test_improve_data_is_the_kept_episodes_copied_per_epoch_each_copy_with_its_own_replay(tmp_path: Path) -> None:
    from agents import OraclePolicy, ScriptedUser
    from trainers.rest import improve_data
    from trainers.rollout import RolloutEngine

    episodes = RolloutEngine({"source": "synthetic"}, OraclePolicy(), ScriptedUser(), num_envs=8, seed=0).run(40, None)
    kept, bc = episodes[:10], episodes[10:]
    ids = lambda es: [e.episode_id for e in es]  # noqa: E731
    cfg = load_config(QUICKSTART, ["rest.replay=0.25", "sft.epochs=3"])
    data = improve_data(cfg, 1, kept, bc)
    assert ids(data.episodes[:30]) == ids(kept) * 3  # each copy of the kept episodes ...
    replayed = ids(data.episodes[30:])
    assert len(replayed) == 9 and len(set(replayed)) == 9 and set(replayed) <= set(ids(bc))  # ... with 3 other ones
    assert data.move_weights == [None] * 30 + [0.0] * 9  # the replayed move tags out of the loss
    again = improve_data(cfg, 1, kept, bc[::-1])  # the same draw whatever order the dialogues come in (resume)
    assert ids(again.episodes) == ids(data.episodes)
    assert ids(improve_data(cfg, 2, kept, bc).episodes) != ids(data.episodes)  # another iteration, another draw
    no_replay = load_config(QUICKSTART, ["rest.replay=0", "sft.epochs=3"])
    assert ids(improve_data(no_replay, 1, kept, bc).episodes) == ids(kept) * 3


def test_stage_records_keep_policy_paths_relative_to_the_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run resumes from another working directory, or after its directory was moved."""
    from trainers.stages import Policy, Stage

    run = tmp_path / "runs" / "r"
    (run / "bc" / "policy").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    Stage(Path("runs/r"), "bc").finish({}, Policy("runs/r/bc/policy", None, "bc"))
    assert json.loads((run / "bc" / "done.json").read_text())["policy"] == {
        "model": "bc/policy",
        "adapter": None,
        "name": "bc",
    }
    monkeypatch.chdir(tmp_path / "runs")  # elsewhere, the run named by its absolute path
    assert Path(Stage(run, "bc").policy().model).resolve() == (run / "bc" / "policy").resolve()
    moved = tmp_path / "moved"
    run.rename(moved)
    assert Stage(moved, "bc").policy().model == str(moved / "bc" / "policy")
    # a hub id stays as it is
    Stage(moved, "start").finish({}, Policy("org/model", None, "base"))
    assert Stage(moved, "start").policy().model == "org/model"


def test_a_resumed_bf16_grow_redraws_the_same_episodes_up_to_the_tokens_of_rare_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With bf16 weights a row's logits can round differently in another batch (the resumed run's
    batches hold other rows), so the guarantee is: the same episode ids with the same tasks, prices,
    hidden meanings and sampling seeds; the tokens of most episodes; never a lost or duplicated one."""
    settings = ("wandb.enabled=false", "model.dtype=bfloat16", "rest.iterations=1")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert train(straight, *settings) == 0
    kills = Kills(monkeypatch)
    kills.episodes_file = "grow.jsonl"
    assert train(killed, *settings) == 130
    assert train(killed, *settings, resume=True) == 0
    a, b = (
        sorted(read_episodes(run / "iter-1" / "grow.jsonl"), key=lambda e: e.episode_id) for run in (straight, killed)
    )
    assert [e.episode_id for e in a] == [e.episode_id for e in b] and len(a) == 32
    fixed = lambda e: (e.task_id, e.costs, e.interpretation, e.metadata["seed"])  # noqa: E731
    assert [fixed(e) for e in a] == [fixed(e) for e in b]
    assert sum(x.messages == y.messages for x, y in zip(a, b)) >= 0.8 * len(a)


def test_a_larger_final_evaluation_applies_to_the_evaluation_that_is_last_now(tmp_path: Path) -> None:
    from trainers.stages import resume_check

    def finish(stage: str) -> None:
        (tmp_path / stage).mkdir(parents=True)
        (tmp_path / stage / "done.json").write_text("{}")

    def rest(iterations: int, final: int = 0) -> dict:
        return {"rest": {"iterations": iterations, "final_episodes_per_point": final}}

    finish("bc")
    finish("bc/eval")
    # the start's evaluation was the last of a run of 0 iterations; with one more it is not
    assert set(resume_check(rest(0), rest(1, 100), tmp_path)) == {"rest.iterations", "rest.final_episodes_per_point"}
    with pytest.raises(
        ConfigError, match=r"rest\.final_episodes_per_point \(0 -> 100\) would change finished stages bc/eval"
    ):
        resume_check(rest(0), rest(0, 100), tmp_path)
    finish("iter-1")
    finish("iter-1/eval")
    # fewer iterations make iter-1's (ordinary) evaluation the last: the larger one is not silently skipped
    with pytest.raises(ConfigError, match=r"rest\.iterations \(2 -> 1\) makes the finished iter-1/eval the final"):
        resume_check(rest(2, 100), rest(1, 100), tmp_path)
    assert set(resume_check(rest(2), rest(1), tmp_path)) == {"rest.iterations"}


def test_the_improve_steps_epochs_change_after_behaviour_cloning_but_its_other_sft_settings_do_not(
    tmp_path: Path,
) -> None:
    from trainers.stages import resume_check

    (tmp_path / "bc").mkdir()
    (tmp_path / "bc" / "done.json").write_text("{}")
    saved = {"sft": {"epochs": 2, "learning_rate": 1e-3}}
    assert set(resume_check(saved, {"sft": {"epochs": 6, "learning_rate": 1e-3}}, tmp_path)) == {"sft.epochs"}
    with pytest.raises(ConfigError, match=r"sft\.learning_rate \(0\.001 -> 0\.002\) would change finished stages bc"):
        resume_check(saved, {"sft": {"epochs": 2, "learning_rate": 2e-3}}, tmp_path)


def test_every_generation_backend_is_shut_down_before_training_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The improve step trains with no engine alive (a vLLM engine holds GBs that SFT needs: two
    Gemma 3 engines beside its SFT ran a 24 GB machine out of memory), and the final evaluation
    starts one again."""
    import trainers.rest
    from trainers.models import PolicyBackends

    made: list[PolicyBackends] = []
    open_at_training: list[bool] = []
    real_init, real_train = PolicyBackends.__init__, trainers.rest.train_sft

    def init(self, cfg) -> None:
        real_init(self, cfg)
        made.append(self)

    def train_sft(*args, **kwargs):
        open_at_training.append(any(b.backend is not None or b.user_backend is not None for b in made))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(PolicyBackends, "__init__", init)
    monkeypatch.setattr(trainers.rest, "train_sft", train_sft)
    assert train(tmp_path / "run") == 0
    assert made and open_at_training == [False, False]  # behaviour cloning, then the improve step
    assert json.loads((tmp_path / "run" / "iter-1" / "eval" / "eval.json").read_text())["policy"] == "iter-1"
