"""Reinforced Self-Training, read top to bottom like the algorithm box::

    start = behaviour_cloning()            cost-blind scripted dialogues, cloned (optional)
    user  = clone_user()                   the self-play user's own adapter (optional, user.adapter: clone)
    for iteration in 1..N:
        grown  = grow(policy)              self-play at training prices, K samples per (task, prices)
        kept   = filter(grown)             best of each group / rising threshold
        data   = improve_data(kept)        the kept episodes, with replayed behaviour-cloning dialogues
        policy = improve(init, data)       SFT on the assistant's turns, from the start (ReST-EM) or the last policy
        evaluate(policy)                   held-out and extrapolation prices, against the oracle

State lives only in files under ``run_dir``: each stage writes into its own folder and leaves
``done.json`` when finished (``trainers.stages``). ``resume=True`` skips finished stages and
picks a killed one up where it stopped (episodes from the JSONL log, training from SFT
checkpoints), so no finished episode or checkpoint is lost or redone.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from agents.base import Assistant
from agents.baselines import RandomMixture
from agents.generation import Completion
from agents.llm_assistant import LLMAssistant
from agents.scripted_user import ScriptedUser
from trainers.audit import label_metrics
from trainers.budget_check import generation_budget
from trainers.config import ConfigError, RunConfig
from trainers.config_loading import add_config_arguments, config_from_args, to_dict
from trainers.episodes import Episode, EpisodeLog, play_order, read_finished_episodes
from trainers.evaluate import evaluate_policy, split_points
from trainers.filtering import episode_score, filter_episodes
from trainers.models import USER_CLONE, PolicyBackends, load_policy_model, make_assistant, run_rules, user_adapter_path
from trainers.relabel import relabel_groups
from trainers.rollout import RolloutEngine, env_kwargs, summarize
from trainers.run_logging import RunLogger
from trainers.sft import build_sft_examples, train_sft
from trainers.stages import Policy, Stage, prepare_run_dir, was_final
from trainers.user_cloning import user_chats


class BCPolicy(Assistant):
    """The cost-blind scripted policy of the behaviour-cloning stage: a random mixture of moves
    (``RandomMixture``) whose episodes record the chat in the LLM assistant's prompt format, so
    that cloning trains on exactly what the model will see. Each first move is drawn from its
    turn's seed, so an episode does not depend on the order it was played in (a resumed stage
    plays the same episodes). ``questions`` maps a query to a human clarifying question of its
    task (ClarifyingQA's), asked instead of the scripted one."""

    forces_prefixes = True  # a forced opening (``"MULTI:"``) makes it play that move: rest.bc.balanced

    def __init__(self, weights: dict[str, float], prompt: LLMAssistant, questions: Mapping[str, str] | None = None):
        self.weights, self.prompt, self.questions = dict(weights), prompt, dict(questions or {})
        self.name = "bc_random_mixture"

    def act(self, observation: Any) -> str:
        return self._human(observation, RandomMixture(self.weights).act(observation))

    def generate_batch(
        self, observations: Sequence[Any], seeds: Sequence[int] | None = None, prefixes: Sequence[str] | None = None
    ) -> list[Completion]:
        seeds = seeds if seeds is not None else [0] * len(observations)
        prefixes = prefixes if prefixes is not None else [""] * len(observations)
        texts = [
            self._human(o, self._forced(o, p) if p else RandomMixture(self.weights, seed=s).act(o))
            for o, s, p in zip(observations, seeds, prefixes)
        ]
        return [Completion(t, (), (), "stop") for t in texts]

    def _forced(self, observation: Any, prefix: str) -> str:
        move = prefix.strip().removesuffix(":")
        if move not in self.weights or RandomMixture.clarified(observation):
            raise ValueError(f"BCPolicy can force a first move of {sorted(self.weights)}, not {prefix!r}")
        return RandomMixture({move: 1.0}).act(observation)

    def _human(self, observation: Any, message: str) -> str:
        question = self.questions.get(observation["query"])
        return f"CLARIFY: {question}" if question and message.startswith("CLARIFY:") else message

    def conversation(self, observation: Any) -> list[dict[str, str]]:
        return self.prompt.conversation(observation)


@dataclass
class ReSTRun:
    """What the stages share: the config, the run directory, the logger and the backends."""

    cfg: RunConfig
    run_dir: Path
    logger: RunLogger
    backends: PolicyBackends
    base: Policy

    def stage(self, name: str) -> Stage:
        return Stage(self.run_dir, name)

    def close(self) -> None:
        self.backends.close()
        self.logger.finish()


RELABEL_SALT = 7_919  # the relabelled prices' draws: a seed of their own, apart from every stage's


def stage_seed(iteration: int, salt: int) -> int:
    """A seed for one stage, derived from the run seed (distinct per stage and iteration)."""
    return int(np.random.SeedSequence([salt, iteration]).generate_state(1)[0])


# --- the steps ---------------------------------------------------------------------------------


def grow(run: ReSTRun, assistant: Assistant, user: Any, out: Path, iteration: int, episodes: int) -> list[Episode]:
    """Self-play ``episodes`` episodes at training prices, K per (task, prices) group
    (iteration 0, the behaviour-cloning dialogues: first moves forced only with ``rest.bc.balanced``,
    in groups of ``rest.bc.opening_cycle()``)."""
    cfg, bc = run.cfg, run.cfg.rest.bc
    cycle = bc.opening_cycle() if iteration == 0 and bc.balanced else None
    engine = RolloutEngine(
        env_kwargs(cfg),
        assistant,
        user,
        num_envs=cfg.rollout.num_envs,
        samples_per_group=len(cycle) if cycle else cfg.rollout.samples_per_group,
        seed=stage_seed(iteration, cfg.seed),
        policy_name=assistant.name,
        iteration=iteration,
        explore_first_move=cfg.rollout.explore_first_move if iteration > 0 else bc.balanced,
        opening_cycle=cycle,
    )
    return engine.run(episodes, out, progress=True)


def improve(
    run: ReSTRun,
    init: Policy,
    episodes: Sequence[Episode],
    move_weights: Sequence[float | None] | None,
    out: Path,
    name: str,
    epochs: int = 1,
    log_prefix: str = "improve",
    step: int = 0,
) -> Policy:
    """Fine-tune on ``episodes`` (assistant turns only; ``move_weights``: per episode, its first
    move tag's loss weight, None for the default), ``epochs`` passes, from ``init``; resumable."""
    import transformers

    cfg = run.cfg
    tokenizer = transformers.AutoTokenizer.from_pretrained(run.base.model)
    examples = build_sft_examples(
        episodes, tokenizer, cfg.sft.max_length, cfg.model.chat_template_kwargs, move_weights, cfg.sft.followup_weight
    )
    sft = replace(cfg.sft, epochs=epochs)
    # the generation engines (vLLM: one per merged adapter) hold GBs that training needs; the next
    # stage that generates starts them again (about a minute each on a CPU)
    run.backends.close()

    def on_log(record: dict) -> None:
        run.logger.log({f"{log_prefix}/{k}": v for k, v in record.items()}, step)

    if cfg.sft.lora:
        result = train_sft(run.base.model, examples, out, sft, resume=True, init_adapter=init.adapter, on_log=on_log)
        return Policy(run.base.model, str(result.path), name)
    result = train_sft(init.model, examples, out, sft, resume=True, on_log=on_log)
    return Policy(str(result.path), None, name)


@dataclass(frozen=True)
class ImproveData:
    """What an improve step trains on, in one shuffled pass: the kept episodes ``sft.epochs`` times,
    then the replayed behaviour-cloning dialogues (a fresh draw for each copy of the kept ones),
    whose move tags are out of the loss (``move_weights`` 0; None: the default weight)."""

    episodes: list[Episode]
    move_weights: list[float | None]


def improve_data(cfg: RunConfig, it: int, kept: Sequence[Episode], bc_episodes: Sequence[Episode]) -> ImproveData:
    """Iteration ``it``'s improve data (``ImproveData``); the replay draw is the same on resume."""
    passes = cfg.sft.epochs
    replayed: list[Episode] = []
    if cfg.rest.replay > 0 and bc_episodes:
        pool = sorted(bc_episodes, key=play_order)  # the order they were played, whatever the file's
        rng = np.random.default_rng([cfg.seed, it])
        n = passes * int(round(cfg.rest.replay * len(kept) / (1 - cfg.rest.replay)))
        replayed = [pool[i] for i in sorted(rng.choice(len(pool), min(len(pool), n), replace=False))]
    return ImproveData(list(kept) * passes + replayed, [None] * (len(kept) * passes) + [0.0] * len(replayed))


def evaluate(run: ReSTRun, policy: Policy, stage: Stage, step: int, final: bool) -> None:
    """The policy at the evaluation prices, greedy unless ``eval.temperature`` > 0 (``final``: the
    run's last evaluation, ``rest.final_episodes_per_point`` in ``rest.final_splits``)."""
    cfg = run.cfg
    record = stage.record
    if record is None:
        assistant, user = run.backends.agents(policy, cfg.eval.temperature)
        report = evaluate_policy(
            assistant,
            split_points(cfg.eval.splits),
            episodes_per_split(cfg, final),
            env_kwargs(cfg, evaluation=True),
            cfg.seed,
            stage.folder,
            user=user,
            num_envs=cfg.rollout.num_envs,
            baselines=cfg.eval.baselines,
            bootstrap_samples=cfg.eval.bootstrap_samples,
            policy_name=policy.name,
            progress=True,
        )
        run.logger.log_eval(report, step)
        record = {"summary": report.summary()}
        stage.finish(record, policy)
    shown = {
        k: v
        for k, v in record["summary"].items()
        if k.endswith(("/reward", "/regret", "/oracle_agreement")) or "steerability/" in k
    }
    print(f"[eval {policy.name}] " + ", ".join(f"{k}={v:.3f}" for k, v in shown.items()))


def episodes_per_split(cfg: RunConfig, final: bool) -> dict[str, int]:
    """Episodes per price point of each eval split: ``rest.final_episodes_per_point`` (when set) in
    the final evaluation's splits (``rest.final_splits``, else all), else ``eval.episodes_per_point``."""
    large = set(cfg.rest.final_splits or cfg.eval.splits) if final and cfg.rest.final_episodes_per_point else set()
    return {
        s: cfg.rest.final_episodes_per_point if s in large else cfg.eval.episodes_per_point for s in cfg.eval.splits
    }


# --- the stages ------------------------------------------------------------------------------------


def behaviour_cloning(run: ReSTRun) -> Policy:
    """The cost-blind start: dialogues of a random mixture of moves with the scripted user, cloned."""
    stage, bc = run.stage("bc"), run.cfg.rest.bc
    if stage.record is not None:
        return stage.policy()
    print(f"[bc] {bc.episodes} dialogues of a cost-blind random mixture {bc.move_weights}")
    policy = BCPolicy(bc.move_weights, make_assistant(run.cfg, None, None, 0.0, "bc"), human_questions(run.cfg))
    episodes = grow(run, policy, ScriptedUser(), stage.folder / "episodes.jsonl", 0, bc.episodes)
    cloned = improve(run, run.base, episodes, None, stage.folder / "policy", "bc", bc.epochs, "bc")
    stage.finish(summarize(episodes), cloned)
    return cloned


def clone_user(run: ReSTRun) -> Policy:
    """The self-play user's own adapter (``user.adapter: clone``): the base model fine-tuned on the
    training tasks' user turns (``trainers.user_cloning``), before any policy plays against it."""
    from clarify_env.sources import make_source

    stage = run.stage("user")
    if stage.record is not None:
        return stage.policy()
    chats = user_chats(make_source(run.cfg.env.source))
    if not chats:
        raise ConfigError("user.adapter 'clone': the training tasks have no task with two meanings to clone a user on")
    print(f"[user] cloning the user on {len(chats)} turns of the training tasks ({run.cfg.user.clone_epochs} epochs)")
    import transformers

    cfg = run.cfg
    tokenizer = transformers.AutoTokenizer.from_pretrained(run.base.model)
    examples = build_sft_examples(
        chats, tokenizer, cfg.sft.max_length, cfg.model.chat_template_kwargs, [1.0] * len(chats)
    )
    sft = replace(cfg.sft, epochs=cfg.user.clone_epochs, lora=True)  # a LoRA adapter even where the policy is not

    def on_log(record: dict) -> None:
        run.logger.log({f"user/{k}": v for k, v in record.items()}, 0)

    result = train_sft(run.base.model, examples, user_adapter_path(cfg), sft, resume=True, on_log=on_log)
    cloned = Policy(run.base.model, str(result.path), "user")
    stage.finish({"chats": len(chats), "turns": dict(Counter(c.episode_id.rsplit("/", 1)[1] for c in chats))}, cloned)
    return cloned


def human_questions(cfg: RunConfig) -> dict[str, str]:
    """Each training query's human clarifying question, where its tasks carry one (ClarifyingQA)."""
    from clarify_env.sources import ListSource, make_source

    source = make_source(cfg.env.source)
    if not isinstance(source, ListSource):
        return {}
    return {t.query: t.metadata["clarifying_question"] for t in source if t.metadata.get("clarifying_question")}


def bc_episodes(run: ReSTRun) -> list[Episode]:
    """The behaviour-cloning dialogues to replay (none without replay or without the stage)."""
    stage = run.stage("bc")
    if run.cfg.rest.replay == 0 or stage.record is None:
        return []
    return read_finished_episodes(stage.folder / "episodes.jsonl", stage.record["episodes"])


def iteration(run: ReSTRun, it: int, start: Policy, policy: Policy) -> Policy:
    """One grow / filter / improve iteration from ``policy``; returns the improved policy."""
    cfg, stage = run.cfg, run.stage(f"iter-{it}")
    if stage.record is not None:
        return stage.policy()
    assistant, user = run.backends.agents(policy, cfg.sampling.temperature)
    grown = grow(run, assistant, user, stage.folder / "grow.jsonl", it, cfg.rest.grow_episodes)
    kept = filter_episodes(grown, cfg.rest.filter, it)
    if not kept:
        raise RuntimeError(
            f"iteration {it}: the filter kept none of {len(grown)} grown episodes ({summarize(grown)['move_mix']}); "
            "the policy may emit only protocol errors: train the behaviour-cloning stage longer "
            "(rest.bc.episodes / rest.bc.epochs) or loosen rest.filter"
        )
    with EpisodeLog(stage.folder / "kept.jsonl") as log:
        log.write(kept)
    relabelled = relabel(cfg, grown, it)
    if relabelled:
        with EpisodeLog(stage.folder / "relabelled.jsonl") as log:
            log.write(relabelled)
    data = improve_data(cfg, it, [*kept, *relabelled], bc_episodes(run))
    init = start if cfg.rest.improve_from == "base" else policy
    print(
        f"[iter {it}] grown {len(grown)}, kept {len(kept)}"
        + (f" (+{len(relabelled)} at {cfg.rest.relabel_prices} relabelled prices a group)" if relabelled else "")
        + f", training on {len(data.episodes)} from {init.name}"
    )
    improved = improve(run, init, data.episodes, data.move_weights, stage.folder / "policy", f"iter-{it}", step=it)
    metrics = {**iteration_metrics(cfg, grown, kept), "filter/relabelled": len(relabelled)}
    run.logger.log(metrics, it)
    run.logger.log_dialogues("grow/dialogues", kept, it)
    stage.finish(metrics, improved)
    return improved


def relabel(cfg: RunConfig, grown: Sequence[Episode], it: int) -> list[Episode]:
    """Iteration ``it``'s hindsight-relabelled episodes (``rest.relabel_prices`` fresh training
    prices a group, ``trainers.relabel``); the same draws on resume."""
    if cfg.rest.relabel_prices == 0:
        return []
    from clarify_env.costs import make_cost_sampler
    from trainers.eval_metrics import task_lookup

    return relabel_groups(
        grown,
        cfg.rest.filter,
        cfg.rest.relabel_prices,
        make_cost_sampler(cfg.env.costs).sample,
        task_lookup(cfg.env.source),
        run_rules(cfg),
        make_assistant(cfg, None).conversation,
        seed=int(np.random.SeedSequence([cfg.seed, it, RELABEL_SALT]).generate_state(1)[0]),
        step=it,
    )


def iteration_metrics(cfg: RunConfig, grown: Sequence[Episode], kept: Sequence[Episode]) -> dict[str, float]:
    """What an iteration logs: the grown episodes' summary and move mix, the filter's counts, the label audit."""
    summary = summarize(grown)
    metrics = {f"grow/{k}": v for k, v in summary.items() if not isinstance(v, dict)}
    metrics.update({f"grow/move_{m}": v for m, v in summary["move_mix"].items()})
    metrics.update(
        {
            "filter/kept": len(kept),
            "filter/kept_mean_score": float(np.mean([episode_score(e, cfg.rest.filter) for e in kept])),
        }
    )
    metrics.update(label_metrics(cfg.env.source, run_rules(cfg), grown, kept))
    return metrics


# --- the loop ----------------------------------------------------------------------------------


def open_run(cfg: RunConfig, resume: bool) -> ReSTRun:
    """The run directory (config saved; checked on resume), the logger, and the base policy, after
    checking that ``sampling.max_new_tokens`` leaves room for the full MULTI answers."""
    if cfg.model.backend == "openai" and not cfg.sft.lora and cfg.rest.iterations > 0:
        raise ConfigError(
            "'sft.lora' must be true with model.backend openai: servers load LoRA adapters at run time, "
            "a fully fine-tuned checkpoint would need a new server"
        )
    run_dir = prepare_run_dir(cfg, resume)
    logger = RunLogger(
        run_dir,
        to_dict(cfg),
        use_wandb=cfg.wandb.enabled,
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        mode=cfg.wandb.mode,
    )
    run = ReSTRun(cfg, run_dir, logger, PolicyBackends(cfg), Policy("", None, "base"))
    try:
        run.base = Policy(load_policy_model(cfg), cfg.model.adapter, "base")
        write_data_record(cfg, run_dir)
        check_generation_budget(run)
    except BaseException:
        run.close()
        raise
    return run


def run_rest(cfg: RunConfig, resume: bool = False) -> Path:
    """Run (or resume) a ReST run; returns the run directory."""
    started = time.time()
    run = open_run(cfg, resume)
    try:
        start = behaviour_cloning(run) if cfg.rest.bc.enabled else run.base
        if cfg.user.adapter == USER_CLONE:
            clone_user(run)
        first = "bc" if cfg.rest.bc.enabled else "start"
        evaluate(run, start, run.stage(f"{first}/eval"), 0, final=was_final(first, cfg.rest.iterations))
        policy = start
        for it in range(1, cfg.rest.iterations + 1):
            policy = iteration(run, it, start, policy)
            final = was_final(f"iter-{it}", cfg.rest.iterations)
            if cfg.rest.eval_each_iteration or final:
                evaluate(run, policy, run.stage(f"iter-{it}/eval"), it, final=final)
        write_summary(run.run_dir, time.time() - started)
    finally:
        run.close()
    return run.run_dir


def write_data_record(cfg: RunConfig, run_dir: Path) -> Path:
    """``data.json``: which tasks the run trains and evaluates on (for a file, its split's task ids)."""
    import json

    from clarify_env.sources import ListSource, make_source

    record = {}
    for role, spec in (("train", cfg.env.source), ("eval", cfg.eval.source or cfg.env.source)):
        source = make_source(spec)
        entry: dict[str, Any] = {"spec": spec, "name": source.name}
        if isinstance(source, ListSource):
            entry.update(tasks=len(source), ids=[t.id for t in source])
        record[role] = entry
    path = run_dir / "data.json"
    path.write_text(json.dumps(record, indent=1))
    return path


def check_generation_budget(run: ReSTRun) -> None:
    """Warn (printed, and logged as ``check/*`` metrics) when ``sampling.max_new_tokens`` would cut
    the full MULTI answer of some training tasks (``trainers.budget_check``)."""
    import transformers

    cfg = run.cfg
    tokenizer = transformers.AutoTokenizer.from_pretrained(run.base.model)
    report = generation_budget(cfg.env.source, tokenizer, cfg.sampling.max_new_tokens, seed=cfg.seed)
    if report.warning():
        print(report.warning())
    run.logger.log({"check/multi_cut_share": report.cut_share, "check/multi_longest_tokens": report.longest}, 0)


def write_summary(run_dir: Path, seconds: float) -> Path:
    """``summary.md``: one section per evaluated policy (its stage's eval/eval.md), in stage order."""

    def order(folder: Path) -> tuple[int, str]:  # bc (or start), then iter-1, iter-2, ..., iter-10
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
    run_rest(config_from_args(args), resume=args.resume)
    return 0


def add_cli(sub: Any) -> None:
    p = sub.add_parser("train", help="run ReST (grow, filter, improve, evaluate) from a YAML config")
    add_config_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue a killed run in the same run_dir")
    p.set_defaults(func=_run)
