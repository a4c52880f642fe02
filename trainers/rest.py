"""Reinforced Self-Training, read top to bottom like the algorithm box::

    start = behaviour-clone a cost-blind scripted policy        (optional "seed" stage)
    for iteration in 1..N:
        grown  = grow(policy)        self-play at training prices, K samples per (task, prices)
        kept   = filter(grown)       best of each group / rising threshold / above group mean
        policy = improve(kept)       SFT on the assistant's turns, from the start (ReST-EM) or the last policy
        evaluate(policy)             held-out and extrapolation prices, against the oracle

State lives only in files under ``run_dir``: each stage writes into its own folder and
leaves ``done.json`` when finished. ``resume=True`` skips finished stages and picks a
killed one up where it stopped (episodes from the JSONL log, training from SFT
checkpoints), so no finished episode or checkpoint is lost or redone.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from agents.base import Agent
from agents.baselines import RandomMixture
from agents.generation import Completion, GenerationBackend
from agents.llm_assistant import LLMAssistant
from agents.scripted_user import ScriptedUser
from trainers.budget_check import generation_budget
from trainers.config import ConfigError, RunConfig, load_config, save_config, to_dict
from trainers.episodes import Episode, EpisodeLog, read_episodes
from trainers.evaluate import EvalReport, evaluate_policy, split_points, task_lookup
from trainers.filtering import episode_score, filter_episodes
from trainers.label_audit import audit_rows, summarize_rows
from trainers.models import load_policy_model, make_assistant, make_backend, make_user, make_user_backend
from trainers.rollout import RolloutEngine, env_kwargs, play_order, summarize
from trainers.run_logging import RunLogger
from trainers.sft import build_sft_examples, train_sft

DONE = "done.json"


@dataclass(frozen=True)
class Policy:
    """What generates: a model checkpoint and, for LoRA, an adapter on it."""

    model: str
    adapter: str | None
    name: str


# --- stages as files ---------------------------------------------------------------------------

def policy_record(policy: Policy, run_dir: Path) -> dict[str, Any]:
    """``policy`` for a stage's ``done.json``: paths inside ``run_dir`` stored relative to it,
    so that a run resumes from any working directory, and after the run directory is moved."""
    root = run_dir.resolve()

    def relative(path: str | None) -> str | None:
        if path is None or not Path(path).exists() or not Path(path).resolve().is_relative_to(root):
            return path  # a hub id, or a checkpoint outside the run
        return Path(path).resolve().relative_to(root).as_posix()

    return {"model": relative(policy.model), "adapter": relative(policy.adapter), "name": policy.name}


def policy_from_record(record: dict[str, Any], run_dir: Path) -> Policy:
    """The inverse of ``policy_record`` (a path written otherwise, as by older runs, as is)."""

    def absolute(path: str | None) -> str | None:
        if path is None or Path(path).is_absolute() or not (run_dir / path).exists():
            return path
        return str(run_dir / path)

    return Policy(absolute(record["model"]), absolute(record["adapter"]), record["name"])


def stage_done(folder: Path) -> dict[str, Any] | None:
    path = folder / DONE
    return json.loads(path.read_text()) if path.exists() else None


def mark_done(folder: Path, record: dict[str, Any]) -> None:
    """Atomically record that the stage in ``folder`` finished."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (DONE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, folder / DONE)


def prepare_run_dir(cfg: RunConfig, resume: bool) -> Path:
    """Create the run directory and save the resolved config; on resume, insist it matches."""
    run_dir = Path(cfg.run_dir)
    saved = run_dir / "config.yaml"
    if saved.exists():
        if not resume:
            raise ConfigError(
                f"{run_dir} already holds a run: pass --resume to continue it, or choose another run_dir"
            )
        changed = config_differences(to_dict(load_config(saved)), to_dict(cfg))
        if changed:
            raise ConfigError(
                f"{saved} differs from this config in {', '.join(changed)}: resume with the same config and overrides"
            )
    save_config(cfg, saved)
    return run_dir


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ, each as ``key (saved -> current)``."""
    out = []
    for key in dict.fromkeys([*saved, *current]):
        a, b, name = saved.get(key), current.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            out += config_differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name} ({a!r} -> {b!r})")
    return out


# --- agents ------------------------------------------------------------------------------------

class Generators:
    """The generation backend of the current model. A LoRA policy is a hot-swapped adapter on
    the same backend (vLLM: a ``LoRARequest``); a fully fine-tuned one loads a new backend."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.model: str | None = None
        self.backend: GenerationBackend | None = None
        self.adapters: dict[str, str] = {}  # name -> path registered with the current backend
        self.user_backend: GenerationBackend | None = None  # user.model's, built once for the whole run

    def get(self, policy: Policy) -> tuple[GenerationBackend, str | None]:
        """The backend generating for ``policy`` and the adapter name to pass it (None: no adapter)."""
        if self.model != policy.model:
            self.close()
            self.backend = make_backend(self.cfg.model, policy.model)
            self.model = policy.model
        if policy.adapter is None:
            return self.backend, None
        if self.adapters.get(policy.name) != policy.adapter:
            self.backend.add_adapter(policy.name, policy.adapter)
            self.adapters[policy.name] = policy.adapter
        return self.backend, policy.name

    def user(self, backend: GenerationBackend) -> Agent:
        """The configured user; an LLM user on ``user.model`` keeps one backend for the whole run."""
        if self.user_backend is None:  # None again for the scripted user or self-play: nothing to build
            self.user_backend = make_user_backend(self.cfg)
        return make_user(self.cfg, backend, self.user_backend)

    def close(self, user: bool = False) -> None:
        """Shut the policy's backend (and with ``user=True`` the user's) down: a vLLM engine holds
        its memory (and processes) until then."""
        for backend in (self.backend, self.user_backend if user else None):
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        self.model, self.backend, self.adapters = None, None, {}
        if user:
            self.user_backend = None
        gc.collect()


class SeedPolicy(Agent):
    """A cost-blind random mixture of moves (``RandomMixture``) whose episodes record the chat
    in the LLM assistant's prompt format, and its messages as the assistant is taught to write
    them (``LLMAssistant.taught_message``), so that behaviour cloning trains on exactly what the
    model will see and write. Each move is drawn from its turn's seed (the rollout engine passes them to
    ``generate_batch``), so an episode does not depend on the order it was played in and a
    resumed seed stage plays the same episodes as an uninterrupted one."""

    def __init__(self, weights: dict[str, float], prompt: LLMAssistant, seed: int = 0) -> None:
        self.weights, self.prompt = dict(weights), prompt
        self.mixture = RandomMixture(self.weights, seed=seed)
        self.name = f"seed_{self.mixture.name}"

    def act(self, observation: Any) -> str:
        return self.prompt.taught_message(self.mixture.act(observation))

    def generate_batch(self, observations: Sequence[Any], seeds: Sequence[int] | None = None) -> list[Completion]:
        """One message per observation; with ``seeds``, each move is drawn from its own seed."""
        if seeds is None:
            texts = [self.act(o) for o in observations]
        else:
            texts = [self.prompt.taught_message(RandomMixture(self.weights, seed=s).act(o))
                     for o, s in zip(observations, seeds)]
        return [Completion(t, (), (), "stop") for t in texts]

    def conversation(self, observation: Any) -> list[dict[str, str]]:
        return self.prompt.conversation(observation)


# --- the four steps ----------------------------------------------------------------------------

def stage_seed(iteration: int, salt: int) -> int:
    """A seed for one stage, derived from the run seed (distinct per stage and iteration)."""
    return int(np.random.SeedSequence([salt, iteration]).generate_state(1)[0])


def grow(cfg: RunConfig, assistant: Agent, user: Agent, out: Path, iteration: int, episodes: int) -> list[Episode]:
    """Self-play ``episodes`` episodes at training prices, K per (task, prices) group
    (iteration 0, the seed dialogues: every group its own task, no forced first moves)."""
    engine = RolloutEngine(
        env_kwargs(cfg.env), assistant, user, num_envs=cfg.rollout.num_envs,
        samples_per_group=cfg.rollout.samples_per_group, seed=stage_seed(iteration, cfg.seed),
        policy_name=assistant.name, iteration=iteration,
        price_draws_per_task=cfg.rollout.price_draws_per_task if iteration > 0 else 1,
        explore_first_move=cfg.rollout.explore_first_move and iteration > 0,
    )
    return engine.run(episodes, out, progress=True)


def improve(cfg: RunConfig, base_model: str, init: Policy, episodes: Sequence[Episode], out: Path,
            name: str, epochs: int | None = None, on_log: Callable[[dict], None] | None = None,
            move_weights: Sequence[float | None] | None = None) -> Policy:
    """Fine-tune on ``episodes`` (assistant turns only), starting from ``init``; resumable.
    ``move_weights``: per episode, the loss weight of its first move tag (None: the default)."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(base_model)
    examples = build_sft_examples(episodes, tokenizer, cfg.sft.max_length, cfg.model.chat_template_kwargs,
                                  move_weights)
    if not examples:
        raise RuntimeError(f"no training examples for {out}: every kept episode was longer than sft.max_length")
    sft = cfg.sft if epochs is None else dataclasses.replace(cfg.sft, epochs=epochs)
    if cfg.sft.lora:
        result = train_sft(base_model, examples, out, sft, resume=True, init_adapter=init.adapter, on_log=on_log)
        return Policy(base_model, str(result.path), name)
    result = train_sft(init.model, examples, out, sft, resume=True, on_log=on_log)
    return Policy(str(result.path), None, name)


def label_metrics(cfg: RunConfig, grown: Sequence[Episode], kept: Sequence[Episode]) -> dict[str, float]:
    """What the filter hands the improve step (``trainers.label_audit``): the grown and kept
    episodes' agreement with the oracle's first move, and the grown follow-up accuracy
    after a clarification against chance. Printed, and returned as metrics (NaNs left out)."""
    try:
        tasks = task_lookup(cfg.env.source)
    except ValueError as err:  # a source that cannot find tasks by id: say so, log nothing
        print(f"[audit] skipped: {err}")
        return {}
    rows = audit_rows(grown, tasks, env_kwargs(cfg.env))  # kept episodes are grown ones: audit each once
    kept_ids = {e.episode_id for e in kept}
    grown_audit = summarize_rows(rows)
    kept_audit = summarize_rows([r for r in rows if r["episode_id"] in kept_ids])
    metrics = {f"grow/{k}": v for k, v in grown_audit.items()}
    metrics["filter/kept_oracle_agreement"] = kept_audit["oracle_agreement"]
    forced = " (forced: exploring starts)" if any("forced_first_move" in e.metadata for e in grown) else ""
    print("[audit] oracle agreement of first moves: grown{} {:.3f}, kept {:.3f}; answers after CLARIFY right "
          "{:.3f} (chance {:.3f})".format(forced, grown_audit["oracle_agreement"], kept_audit["oracle_agreement"],
                                          grown_audit["followup_accuracy"], grown_audit["followup_chance"]))
    return {k: v for k, v in metrics.items() if not np.isnan(v)}


def check_generation_budget(cfg: RunConfig, model_path: str, logger: RunLogger) -> None:
    """Warn (printed, and logged as ``check/*`` metrics) when ``sampling.max_new_tokens``
    would cut the full MULTI answer of some training tasks (``trainers.budget_check``)."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path)
    report = generation_budget(cfg.env.source, tokenizer, cfg.sampling.max_new_tokens, seed=cfg.seed)
    warning = report.warning()
    if warning:
        print(warning)
    logger.log({"check/multi_cut_share": report.cut_share, "check/multi_longest_tokens": report.longest}, 0)


def episodes_per_split(cfg: RunConfig, final: bool) -> dict[str, int]:
    """Episodes per price point of each eval split: ``rest.final_episodes_per_point`` (when
    set) in the final evaluation's splits (``rest.final_splits``, else all), else
    ``eval.episodes_per_point``."""
    large = set(cfg.rest.final_splits or cfg.eval.splits) if final and cfg.rest.final_episodes_per_point else set()
    return {s: cfg.rest.final_episodes_per_point if s in large else cfg.eval.episodes_per_point for s in cfg.eval.splits}


def evaluate(cfg: RunConfig, assistant: Agent, user: Agent, out: Path, per_point: int | dict[str, int]) -> EvalReport:
    """The policy at the configured evaluation prices (greedy unless eval.temperature > 0);
    ``per_point``: episodes per price point, one number or one per split."""
    return evaluate_policy(
        assistant, split_points(cfg.eval.splits), per_point, env_kwargs(cfg.env), cfg.seed, out, user=user,
        num_envs=cfg.rollout.num_envs, baselines=cfg.eval.baselines, bootstrap_samples=cfg.eval.bootstrap_samples,
        policy_name=assistant.name, progress=True,
    )


def seed_move_weights(cfg: RunConfig, data: Sequence[Episode], seed_episodes: Sequence[Episode]) -> list[float | None] | None:
    """Per episode of ``data``: ``rest.seed_mix_move_weight`` for the seed dialogues mixed in
    (those of ``seed_episodes``), None (the default weight) for the rest; None when unset."""
    if cfg.rest.seed_mix_move_weight is None:
        return None
    seeds = {id(e) for e in seed_episodes}
    return [cfg.rest.seed_mix_move_weight if id(e) in seeds else None for e in data]


def improve_data(cfg: RunConfig, run_dir: Path, it: int, kept: Sequence[Episode],
                 seed_episodes: Sequence[Episode]) -> list[Episode]:
    """What iteration ``it`` fine-tunes on: its kept episodes, after those of the earlier
    iterations (read back from their ``kept.jsonl``) with ``rest.accumulate_kept``, plus a
    ``rest.seed_mix`` share of seed dialogues (the same draw on resume). With
    ``rest.seed_mix_fresh`` the list holds all ``sft.epochs`` passes: the kept episodes that many
    times, each pass with its own seed dialogues (the draws disjoint; ``improve_epochs``: one pass)."""
    data = list(kept)
    if cfg.rest.accumulate_kept:
        data = [e for k in range(1, it) for e in read_episodes(run_dir / f"iter-{k}" / "kept.jsonl")] + data
    passes = cfg.sft.epochs if cfg.rest.seed_mix_fresh else 1
    mixed: list[Episode] = []
    if cfg.rest.seed_mix > 0 and seed_episodes:
        # drawn from the seed dialogues in the order they were played (group, then sample): the
        # list's order differs between a run that played them and one that read them back after a
        # kill (the file holds them in the order they finished)
        pool = sorted(seed_episodes, key=play_order)
        rng = np.random.default_rng([cfg.seed, it])
        n = passes * int(round(cfg.rest.seed_mix * len(data) / (1 - cfg.rest.seed_mix)))
        mixed = [pool[i] for i in sorted(rng.choice(len(pool), min(len(pool), n), replace=False))]
    return data * passes + mixed


def improve_epochs(cfg: RunConfig) -> int | None:
    """Passes of an improve step over ``improve_data``'s list: one where it already holds
    ``sft.epochs`` passes (``rest.seed_mix_fresh``), else None (``sft.epochs``)."""
    return 1 if cfg.rest.seed_mix_fresh else None


# --- the loop ----------------------------------------------------------------------------------

def run_rest(cfg: RunConfig, resume: bool = False) -> Path:
    """Run (or resume) a ReST run; returns the run directory."""
    run_dir = prepare_run_dir(cfg, resume)
    started = time.time()
    logger = RunLogger(run_dir, to_dict(cfg), use_wandb=cfg.wandb.enabled, project=cfg.wandb.project,
                       entity=cfg.wandb.entity, mode=cfg.wandb.mode)
    gens = Generators(cfg)
    try:
        base_model = load_policy_model(cfg)
        check_generation_budget(cfg, base_model, logger)
        start = Policy(base_model, cfg.model.adapter, "base")
        seed_episodes: list[Episode] = []

        def evaluate_stage(policy: Policy, folder: Path, step: int, per_point: int | dict[str, int]) -> None:
            record = stage_done(folder)
            if record is None:
                backend, adapter = gens.get(policy)
                assistant = make_assistant(cfg, backend, adapter, cfg.eval.temperature, policy.name)
                report = evaluate(cfg, assistant, gens.user(backend), folder, per_point)
                logger.log_eval(report, step)
                record = {"policy": policy_record(policy, run_dir), "summary": report.summary()}
                mark_done(folder, record)
            shown = {k: v for k, v in record["summary"].items() if k.endswith(("/reward", "/regret", "/oracle_agreement"))
                     or "steerability/" in k}
            print(f"[eval {policy.name}] " + ", ".join(f"{k}={v:.3f}" for k, v in shown.items()))

        if cfg.rest.seed.enabled:
            folder = run_dir / "seed"
            record = stage_done(folder)
            if record is None:
                seed_cfg = cfg.rest.seed
                print(f"[seed] {seed_cfg.episodes} dialogues of a cost-blind random mixture {seed_cfg.weights}")
                seed_policy = SeedPolicy(seed_cfg.weights, make_assistant(cfg, None, None, 0.0, "seed"), cfg.seed)
                seed_episodes = grow(cfg, seed_policy, ScriptedUser(), folder / "episodes.jsonl", 0, seed_cfg.episodes)
                policy = improve(cfg, base_model, start, seed_episodes, folder / "policy", "seed",
                                 epochs=seed_cfg.epochs, on_log=lambda r: logger.log({f"seed/{k}": v for k, v in r.items()}, 0))
                mark_done(folder, {"policy": policy_record(policy, run_dir), **summarize(seed_episodes)})
            else:
                seed_episodes = read_episodes(folder / "episodes.jsonl")
                policy = policy_from_record(record["policy"], run_dir)
            start = policy
        if cfg.rest.eval_start:  # the starting point ReST is measured against: the seed policy, else the base model
            evaluate_stage(start, run_dir / ("seed" if cfg.rest.seed.enabled else "start") / "eval", 0,
                           cfg.eval.episodes_per_point)

        policy = start
        for it in range(1, cfg.rest.iterations + 1):
            folder = run_dir / f"iter-{it}"
            record = stage_done(folder)
            if record is None:
                backend, adapter = gens.get(policy)
                assistant = make_assistant(cfg, backend, adapter, cfg.sampling.temperature, policy.name)
                grown = grow(cfg, assistant, gens.user(backend), folder / "grow.jsonl", it, cfg.rest.grow_episodes)
                kept = filter_episodes(grown, cfg.rest.filter, it)
                with EpisodeLog(folder / "kept.jsonl") as log:
                    log.write(kept)
                grown_summary = summarize(grown)
                if not kept:
                    raise RuntimeError(
                        f"iteration {it}: the filter kept none of {len(grown)} grown episodes "
                        f"({grown_summary['move_mix']}); the policy may emit only protocol errors — "
                        "train the seed stage longer (rest.seed.episodes / rest.seed.epochs) or loosen rest.filter"
                    )
                data = improve_data(cfg, run_dir, it, kept, seed_episodes)
                init = start if cfg.rest.improve_from == "base" else policy
                print(f"[iter {it}] grown {len(grown)}, kept {len(kept)}, training on {len(data)} from {init.name}")
                policy = improve(cfg, base_model, init, data, folder / "policy", f"iter-{it}", improve_epochs(cfg),
                                 on_log=lambda r: logger.log({f"improve/{k}": v for k, v in r.items()}, it),
                                 move_weights=seed_move_weights(cfg, data, seed_episodes))
                metrics = {f"grow/{k}": v for k, v in grown_summary.items() if not isinstance(v, dict)}
                metrics.update({f"grow/move_{m}": v for m, v in grown_summary["move_mix"].items()})
                metrics.update({"filter/kept": len(kept),
                                "filter/kept_mean_score": float(np.mean([episode_score(e, cfg.rest.filter) for e in kept]))})
                metrics.update(label_metrics(cfg, grown, kept))
                logger.log(metrics, it)
                logger.log_dialogues("grow/dialogues", kept, it)
                mark_done(folder, {"policy": policy_record(policy, run_dir), **metrics})
            else:
                policy = policy_from_record(record["policy"], run_dir)
            last = it == cfg.rest.iterations
            if cfg.rest.eval_each_iteration or last:
                evaluate_stage(policy, folder / "eval", it, episodes_per_split(cfg, final=last))

        write_summary(run_dir, time.time() - started)
    finally:
        gens.close(user=True)
        logger.finish()
    return run_dir


def write_summary(run_dir: Path, seconds: float) -> Path:
    """``summary.md``: one section per evaluated policy (its stage's eval/eval.md), in stage order."""

    def order(folder: Path) -> tuple[int, str]:  # seed (or start), then iter-1, iter-2, ..., iter-10
        name = folder.parent.name
        return (int(name.split("-")[1]) if name.startswith("iter-") else 0, name)

    lines = [f"# ReST run {run_dir.name}", "", f"wall time of the last invocation: {seconds / 60:.1f} min", ""]
    for folder in sorted(run_dir.glob("*/eval"), key=order):
        lines += [f"## {folder.parent.name}\n", (folder / "eval.md").read_text()]
    path = run_dir / "summary.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}")
    return path


def _run(args: Any) -> int:
    cfg = load_config(args.config, args.overrides)
    run_rest(cfg, resume=args.resume)
    return 0


def add_cli(sub: Any) -> None:
    p = sub.add_parser("train", help="run ReST (grow, filter, improve, evaluate) from a YAML config")
    p.add_argument("config", help="run config YAML, e.g. configs/quickstart.yaml")
    p.add_argument("--resume", action="store_true", help="continue a killed run in the same run_dir")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    p.set_defaults(func=_run)
