"""The batched self-play rollout engine: many environments in lockstep, one model call per turn.

Episode ``i`` is sample ``k = i % K`` of group ``g = i // K``. A group's task and prices
are drawn from ``numpy.random.default_rng([seed, g])``; each sample resets its env with
its own seed (from ``SeedSequence([seed, g, k])``), which draws the user's hidden
interpretation. So an episode's id ``g{g}-s{k}`` fixes its task, prices and hidden
meaning whatever the batching, and a resumed run skips exactly the ids already written.

Each lockstep step: every pending assistant turn goes to ONE ``assistant`` batch call,
every user turn those messages need goes to ONE ``user`` batch call, then each env
finishes its step; finished episodes stream to the JSONL file and new ones take their
slots until the requested number is done.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from agents.base import Agent, as_assistant, as_user
from agents.generation import GenerationBackend
from clarify_env.costs import Costs
from clarify_env.env import ClarifyEnv
from clarify_env.protocol import MOVES, ProtocolError, parse_action
from clarify_env.tasks import Task
from trainers.config import RunConfig
from trainers.episodes import Episode, EpisodeLog, read_episodes
from trainers.models import load_policy_model, make_agents, make_backend, run_rules

EnvSpec = Mapping[str, Any] | Callable[[], ClarifyEnv]


@dataclass
class RolloutStats:
    """Counters of one ``run``: what was generated and how long it took."""

    episodes: int = 0
    steps: int = 0
    assistant_calls: int = 0
    user_calls: int = 0
    assistant_tokens: int = 0
    user_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.assistant_tokens + self.user_tokens

    def rates(self) -> dict[str, float]:
        s = max(self.seconds, 1e-9)
        return {"episodes_per_s": self.episodes / s, "tokens_per_s": self.tokens / s}


@dataclass
class _Slot:
    """An episode in progress in one of the engine's environments."""

    env: ClarifyEnv
    index: int
    seed: int
    obs: dict[str, Any]
    moves: list[str] = field(default_factory=list)
    assistant_token_ids: list[list[int]] = field(default_factory=list)
    user_token_ids: list[list[int]] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    user_sources: list[str] = field(default_factory=list)  # where each user turn came from (UserReply.source)
    reward: float = 0.0
    last_obs: dict[str, Any] = field(default_factory=dict)  # what the assistant saw at its latest turn
    info: dict[str, Any] = field(default_factory=dict)  # the env's info at the end


def _check_count(agent: Agent, outputs: Sequence[Any], inputs: Sequence[Any]) -> None:
    if len(outputs) != len(inputs):
        raise RuntimeError(f"agent {agent.name!r} returned {len(outputs)} messages for a batch of {len(inputs)}")


ASSISTANT, USER = 0, 1


def turn_seed(episode_seed: int, turn: int, role: int) -> int:
    """The sampling seed of one model turn: a function of the episode's seed alone, so an
    episode's samples do not depend on which episodes share its batch (exact resume)."""
    return int(np.random.SeedSequence([episode_seed, turn, role]).generate_state(1, np.uint64)[0] % 2**63)


def move_name(message: str) -> str:
    """The protocol move of a message, or ``"ERROR"`` when it does not parse."""
    parsed = parse_action(message)
    return "ERROR" if isinstance(parsed, ProtocolError) else parsed.move.value


class RolloutEngine:
    """Plays episodes of ``ClarifyEnv`` with an assistant and a user agent, batched across envs.

    Args:
        env: keyword arguments for ``ClarifyEnv`` or a factory returning one; every env's
            ``user`` is set to ``user``.
        assistant: the assistant (``agents.Assistant``, or any object with ``act``): its
            ``generate_batch`` is called once per lockstep turn (token ids recorded).
        user: the user simulator (``agents.UserSimulator``, or any object with ``act``): its
            ``reply_batch`` is called once per lockstep turn that needs user turns.
        num_envs: environments played in lockstep (the batch size of each model call).
        samples_per_group: K, the episodes sharing one task and one pair of prices.
        seed: fixes every group's task and prices and every episode's hidden meaning.
        policy_name: recorded in each episode (default: the assistant's name).
        iteration: the ReST iteration recorded in each episode.
        explore_first_move: sample ``k`` of each group opens its first message with the move
            tag ``MOVES[k % 3]`` (``ANSWER:``, ``MULTI:``, ``CLARIFY:``) and the assistant
            writes the rest (exploration over the first move: with K = 3 every group holds
            each move once, so best-of-group keeps the move that scored best on that task
            at those prices). Needs an assistant that ``forces_prefixes`` (an LLM); the
            forced tag is recorded in the episode's ``metadata["forced_first_move"]``.
        opening_cycle: with ``explore_first_move``, the move tags sample ``k`` opens with, in
            turn (``opening_cycle[k % len]``; default ``ANSWER, MULTI, CLARIFY``): a move named
            twice opens twice as many episodes of each group of ``len`` (the behaviour-cloning
            stage's weighted ``rest.bc.balanced``).
    """

    def __init__(
        self,
        env: EnvSpec,
        assistant: Agent,
        user: Agent,
        num_envs: int = 64,
        samples_per_group: int = 4,
        seed: int = 0,
        policy_name: str | None = None,
        iteration: int | None = None,
        explore_first_move: bool = False,
        opening_cycle: Sequence[str] | None = None,
    ) -> None:
        if num_envs < 1 or samples_per_group < 1:
            raise ValueError(f"need num_envs and samples_per_group >= 1, got {num_envs} and {samples_per_group}")
        self.assistant, self.user = as_assistant(assistant), as_user(user)
        if explore_first_move and not self.assistant.forces_prefixes:
            raise ValueError(
                f"explore_first_move forces the opening of generated messages: assistant "
                f"{self.assistant.name!r} cannot (it is not an LLM assistant)"
            )
        self.explore_first_move = explore_first_move
        self.opening_cycle = tuple(opening_cycle) if opening_cycle is not None else tuple(m.value for m in MOVES)
        unknown = sorted(set(self.opening_cycle) - {m.value for m in MOVES})
        if not self.opening_cycle or unknown:
            raise ValueError(
                f"opening_cycle must name moves of {[m.value for m in MOVES]}, got {list(self.opening_cycle)}"
            )
        factory = env if callable(env) else (lambda: ClarifyEnv(**env))
        self.envs = [factory() for _ in range(num_envs)]
        for e in self.envs:
            e.user = self.user
        self.samples_per_group = samples_per_group
        self.seed = seed
        self.policy_name = policy_name or self.assistant.name
        self.iteration = iteration
        self.stats = RolloutStats()

    # --- what each episode id means -----------------------------------------------------------
    def episode_id(self, index: int) -> str:
        return f"g{index // self.samples_per_group}-s{index % self.samples_per_group}"

    def group(self, g: int) -> tuple[Task, Costs]:
        """Group ``g``'s task and prices, drawn from ``(seed, g)`` alone."""
        env = self.envs[0]
        rng = np.random.default_rng([self.seed, g])
        return env.source.sample(rng), env.cost_sampler.sample(rng)

    def forced_move(self, index: int) -> str:
        """The move tag episode ``index`` opens with under ``explore_first_move``."""
        return self.opening_cycle[(index % self.samples_per_group) % len(self.opening_cycle)]

    def episode_seed(self, index: int) -> int:
        """The reset seed of episode ``index`` (it draws the hidden interpretation)."""
        g, k = divmod(index, self.samples_per_group)
        return int(np.random.SeedSequence([self.seed, g, k]).generate_state(1)[0])

    # --- the loop --------------------------------------------------------------------------------
    def run(self, num_episodes: int, out_path: str | Path | None = None, progress: bool = True) -> list[Episode]:
        """Play episodes ``0 .. num_episodes - 1`` and return them in index order.

        With ``out_path``, episodes are appended to that JSONL file as they finish, ids
        already in it are skipped (and returned as read), so a killed run resumes.
        """
        self.stats = RolloutStats()
        done: dict[int, Episode] = {}
        log = EpisodeLog(out_path) if out_path is not None else None
        try:
            if log is not None:
                done = self._resumed(read_episodes(log.path), num_episodes)
            todo = collections.deque(i for i in range(num_episodes) if i not in done)
            groups: dict[int, tuple[Task, Costs]] = {}
            slots: list[_Slot | None] = [None] * len(self.envs)
            start = time.perf_counter()
            with tqdm(total=len(todo), disable=not progress, unit="ep", desc="rollout", dynamic_ncols=True) as bar:
                while True:
                    for j, env in enumerate(self.envs):
                        if slots[j] is None and todo:
                            slots[j] = self._start(env, todo.popleft(), groups)
                    active = [s for s in slots if s is not None]
                    if not active:
                        break
                    ended = self._step(active)
                    finished = [self._episode(s) for s in ended]
                    if log is not None:
                        log.write(finished)  # one fsync per step
                    for s, episode in zip(ended, finished):
                        done[s.index] = episode
                        slots[slots.index(s)] = None
                    self.stats.episodes += len(finished)
                    self.stats.seconds = time.perf_counter() - start
                    bar.set_postfix(tok_s=f"{self.stats.tokens / self.stats.seconds:.0f}", refresh=False)
                    bar.update(len(finished))
        finally:
            if log is not None:
                log.close()
        return [done[i] for i in range(num_episodes)]

    def _resumed(self, episodes: Sequence[Episode], num_episodes: int) -> dict[int, Episode]:
        """The requested episodes already on file, checked against this engine's seed and source."""
        index = {self.episode_id(i): i for i in range(num_episodes)}
        found = {}
        for e in episodes:
            if e.episode_id not in index:
                continue
            i = index[e.episode_id]
            task, costs = self.group(i // self.samples_per_group)
            if e.task_id != task.id or e.costs != costs.to_dict():
                raise ValueError(
                    f"episode {e.episode_id} on file has task {e.task_id} at {e.costs}, but seed {self.seed} "
                    f"gives task {task.id} at {costs.to_dict()}: resume with the same seed, tasks and prices, "
                    "or write to a new file"
                )
            found[i] = e
        return found

    def _start(self, env: ClarifyEnv, index: int, groups: dict[int, tuple[Task, Costs]]) -> _Slot:
        g = index // self.samples_per_group
        if g not in groups:
            groups.clear()  # groups are started in order: only the current one is needed again
            groups[g] = self.group(g)
        task, costs = groups[g]
        seed = self.episode_seed(index)
        obs, _ = env.reset(seed=seed, options={"task": task, "costs": costs})
        return _Slot(env, index, seed, obs)

    def _step(self, active: list[_Slot]) -> list[_Slot]:
        """One lockstep turn of every active episode; returns those that ended."""
        messages = self._assistant_turns(active)
        requests = [s.env.begin_step(m) for s, m in zip(active, messages)]
        asking = [i for i, r in enumerate(requests) if r is not None]
        replies: dict[int, str] = dict(zip(asking, self._user_turns(active, asking, requests)))
        finished = []
        for i, s in enumerate(active):
            s.obs, reward, terminated, truncated, info = s.env.finish_step(replies.get(i))
            s.reward += reward
            if terminated or truncated:
                s.info = info
                finished.append(s)
        self.stats.steps += 1
        return finished

    def _assistant_turns(self, active: list[_Slot]) -> list[str]:
        observations = [s.obs for s in active]
        for s in active:
            s.last_obs = s.obs
        self.stats.assistant_calls += 1
        seeds = [turn_seed(s.seed, len(s.moves), ASSISTANT) for s in active]
        if self.explore_first_move:
            prefixes = [self.forced_move(s.index) + ":" if not s.moves else "" for s in active]
            completions = self.assistant.generate_batch(observations, seeds=seeds, prefixes=prefixes)
        else:
            completions = self.assistant.generate_batch(observations, seeds=seeds)
        _check_count(self.assistant, completions, observations)
        for s, c in zip(active, completions):
            s.moves.append(move_name(c.text))
            s.assistant_token_ids.append(list(c.token_ids))
            s.finish_reasons.append(c.finish_reason)
            self.stats.assistant_tokens += len(c.token_ids)
        return [c.text for c in completions]

    def _user_turns(self, active: list[_Slot], asking: list[int], requests: list) -> list[str]:
        if not asking:
            return []
        self.stats.user_calls += 1
        batch = [requests[i] for i in asking]
        seeds = [turn_seed(active[i].seed, len(active[i].moves), USER) for i in asking]
        replies = self.user.reply_batch(batch, seeds=seeds)
        _check_count(self.user, replies, batch)
        for i, r in zip(asking, replies):
            active[i].user_sources.append(r.source)
            if r.completion is not None and r.source == "model":
                active[i].user_token_ids.append(list(r.completion.token_ids))
            if r.completion is not None:
                self.stats.user_tokens += len(r.completion.token_ids)
        return [r.text for r in replies]

    def _episode(self, s: _Slot) -> Episode:
        env, info = s.env, s.info
        chat = [
            *self.assistant.conversation(s.last_obs),
            dict(env.messages[-1]),
        ]  # every episode ends on the assistant's message
        g, k = divmod(s.index, self.samples_per_group)
        return Episode(
            episode_id=self.episode_id(s.index),
            group_id=f"g{g}",
            sample_index=k,
            task_id=env.task.id,
            interpretation=env.interpretation_index,
            costs=env.costs.to_dict(),
            messages=[dict(m) for m in env.messages],
            chat=chat,
            moves=s.moves,
            reward=s.reward,
            expected_reward=info["expected_reward"],
            components=info["reward_components"],
            outcome=info["outcome"],
            policy=self.policy_name,
            assistant_token_ids=s.assistant_token_ids,
            user_token_ids=s.user_token_ids,
            iteration=self.iteration,
            metadata={
                "seed": s.seed,
                "protocol_error": info["protocol_error"],
                "rule_expected_reward": info["rule_expected_reward"],
                "extracted_answer": info["extracted_answer"],
                "finish_reasons": s.finish_reasons,
                "user_sources": s.user_sources,
                **({"forced_first_move": self.forced_move(s.index)} if self.explore_first_move else {}),
            },
        )


def env_kwargs(cfg: RunConfig, evaluation: bool = False) -> dict[str, Any]:
    """``ClarifyEnv`` keyword arguments of a run: its env section's source (with ``evaluation``, the
    evaluation's: ``eval.source`` where set) and prices, and its rules (``trainers.models.run_rules``)."""
    source = cfg.eval.source if evaluation and cfg.eval.source is not None else cfg.env.source
    return {"source": source, "costs": cfg.env.costs, "rules": run_rules(cfg)}


def engine_from_config(
    cfg: RunConfig, backend: GenerationBackend | None = None, iteration: int | None = None
) -> RolloutEngine:
    """The engine a run config describes; builds the backend (and the tiny model) unless given one."""
    if backend is None:
        backend = make_backend(cfg.model, load_policy_model(cfg), cfg.run_dir)
    assistant, user = make_agents(cfg, backend)
    return RolloutEngine(
        env_kwargs(cfg),
        assistant,
        user,
        num_envs=cfg.rollout.num_envs,
        samples_per_group=cfg.rollout.samples_per_group,
        seed=cfg.seed,
        iteration=iteration,
        explore_first_move=cfg.rollout.explore_first_move,
    )


def summarize(episodes: Sequence[Episode]) -> dict[str, Any]:
    """Move mix (share of each first move, ERROR = protocol error), mean reward and accuracy."""
    n = len(episodes)
    if n == 0:
        return {"episodes": 0}
    firsts = collections.Counter(e.first_move for e in episodes)
    return {
        "episodes": n,
        "move_mix": {m: firsts.get(m, 0) / n for m in ("ANSWER", "MULTI", "CLARIFY", "ERROR")},
        "mean_reward": float(np.mean([e.reward for e in episodes])),
        "mean_expected_reward": float(np.mean([e.expected_reward for e in episodes])),
        "mean_accuracy": float(np.mean([e.components["accuracy"] for e in episodes])),
        "mean_words": float(np.mean([e.components["words"] for e in episodes])),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """One line: episodes, move mix in percent, mean reward and accuracy."""
    if not summary.get("episodes"):
        return "no episodes"
    mix = " ".join(f"{m} {100 * v:.0f}%" for m, v in summary["move_mix"].items())
    return (
        f"{summary['episodes']} episodes | {mix} | mean reward {summary['mean_reward']:.3f} "
        f"(expected {summary['mean_expected_reward']:.3f}) | accuracy {summary['mean_accuracy']:.3f} "
        f"| words {summary['mean_words']:.1f}"
    )
