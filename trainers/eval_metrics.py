"""Evaluation metrics: per price point against the oracle and the fixed baselines, and steerability.

Per price point: mean reward with a seeded bootstrap 95% CI, F1 and exact match, the
share of each first move, questions per episode, words per final response, protocol
errors and truncations; the oracle's expected reward on the same tasks, the regret
(oracle expected reward minus the policy's ``expected_reward``, which is exact over the
user's meanings where the env can score that, else realised: zero in expectation for the
oracle's own episodes), the part of it due to the choice of first move alone
(``move_regret``: the oracle's expected reward minus that of the policy's first move played
perfectly; the rest is lost in execution) and the agreement of the first move with the
oracle's (a move tied with the oracle's in expected reward agrees too). The fixed
baselines' expected reward and words are computed exactly on the same tasks (each played
with the scripted user against every meaning, weighted by its prior).

Steerability: Spearman rank correlations of the clarify rate with the question price, and
of the multi rate and of the words with the word price, each taken along a sweep that
holds the other price fixed (averaged over such sweeps when there are several, e.g. the
rows of a grid); None where no sweep has 3 points with both sides varying.
"""

from __future__ import annotations

import collections
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from agents.base import Agent
from clarify_env.costs import Costs
from clarify_env.env import ClarifyEnv
from clarify_env.oracle import MoveValue, best, move_values, optimal_moves, task_meanings
from clarify_env.scoring import Rules
from clarify_env.sources import make_source
from clarify_env.tasks import Task
from trainers.episodes import Episode

DEFAULT_BASELINES = ("always_answer", "always_multi", "always_clarify")
TaskLookup = Callable[[str], Task]


def task_lookup(source: Any) -> TaskLookup:
    """A function from task id to task for a source spec: synthetic tasks are rebuilt from
    their ids (``from_id``), finite sources are looked up (``get``)."""
    built = make_source(source)
    for method in ("from_id", "get"):
        if hasattr(built, method):
            return getattr(built, method)
    raise ValueError(f"task source {getattr(built, 'name', source)!r} cannot look tasks up by id (no from_id or get)")


def policy_expectation(env: ClarifyEnv, policy: Agent, task: Task, costs: Costs) -> tuple[float, float]:
    """Exact expected reward and final-response words of a deterministic ``policy`` on ``task``:
    one episode of ``env`` per meaning, weighted by its prior."""
    reward = words = 0.0
    for index, prior in enumerate(task.priors):
        obs, _ = env.reset(seed=0, options={"task": task, "costs": costs, "interpretation": index})
        total, done, info = 0.0, False, {}
        while not done:
            obs, r, terminated, truncated, info = env.step(policy.act(obs))
            total += r
            done = terminated or truncated
        reward += prior * total
        words += prior * info["reward_components"]["words"]
    return reward, words


@dataclass
class PointMetrics:
    """A policy's metrics at one price point (``split`` names the grid it came from)."""

    split: str
    question: float
    word: float
    n: int
    reward: float
    reward_ci_low: float
    reward_ci_high: float
    expected_reward: float
    f1: float
    exact_match: float
    answer_rate: float
    multi_rate: float
    clarify_rate: float
    error_rate: float
    truncation_rate: float
    questions: float
    words: float
    oracle_reward: float
    regret: float
    oracle_agreement: float
    oracle_answer_rate: float
    oracle_multi_rate: float
    oracle_clarify_rate: float
    oracle_words: float
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {"reward", "words"}
    # the oracle's expected reward minus that of the policy's first move played perfectly: the
    # regret of the decisions alone (``regret - move_regret`` is what execution loses: a wrong
    # copy, a wrong answer after a clarification); NaN in reports written before it existed
    move_regret: float = float("nan")

    def to_row(self) -> dict[str, Any]:
        """A flat row (baselines as ``<name>_reward`` and ``<name>_words``) for CSV and tables."""
        row = {k: v for k, v in asdict(self).items() if k != "baselines"}
        for name, values in self.baselines.items():
            row.update({f"{name}_{k}": v for k, v in values.items()})
        return row


# --- statistics --------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float], samples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (seeded)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho of a rate ``y`` along prices ``x``. A rate that stays the same at every
    price does not move with it: 0 (no steering), where scipy would give NaN. None where
    there is nothing to rank (under 3 points, one price, or a missing value)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or any(map(math.isnan, y)):
        return None
    if len(set(y)) < 2:
        return 0.0
    return float(spearmanr(x, y).statistic)


STEERABILITY = {  # name -> (metric, price)
    "clarify_rate_vs_question_price": ("clarify_rate", "question"),
    "multi_rate_vs_word_price": ("multi_rate", "word"),
    "words_vs_word_price": ("words", "word"),
}


def sweeps_along(points: Sequence[PointMetrics], price: str) -> list[list[PointMetrics]]:
    """Groups of points that share the other price, sorted by ``price``; longest first."""
    other = "word" if price == "question" else "question"
    groups: dict[float, list[PointMetrics]] = collections.defaultdict(list)
    for p in points:
        groups[getattr(p, other)].append(p)
    sweeps = [sorted(g, key=lambda p: getattr(p, price)) for g in groups.values()]
    return sorted(sweeps, key=len, reverse=True)


def _sweep_rho(points: Sequence[PointMetrics], metric: str, price: str) -> float | None:
    rhos = [
        spearman([getattr(p, price) for p in sweep], [getattr(p, metric) for p in sweep])
        for sweep in sweeps_along(points, price)
    ]
    rhos = [r for r in rhos if r is not None]
    return float(np.mean(rhos)) if rhos else None


def steerability(points: Sequence[PointMetrics]) -> dict[str, dict[str, float | None]]:
    """Spearman rho along each price with the other held fixed, for the policy and the
    oracle (see the module docstring)."""
    return {
        name: {"policy": _sweep_rho(points, metric, price), "oracle": _sweep_rho(points, f"oracle_{metric}", price)}
        for name, (metric, price) in STEERABILITY.items()
    }


# --- per-point metrics ---------------------------------------------------------------------


def _first_move_value(episode: Episode, values: dict[Any, MoveValue]) -> float:
    """The expected reward of the episode's first move played perfectly (a protocol error: the
    episode's own expected reward, all of its loss a decision's)."""
    for move, value in values.items():
        if move.value == episode.first_move:
            return value.expected_reward
    return episode.expected_reward


def _move_values(task: Task, costs: Costs, rules: Rules) -> dict[Any, MoveValue]:
    """Every move's exact expected reward on ``task`` (what ``oracle_value`` maximises)."""
    return move_values(task_meanings(task), costs, task.query, rules)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def point_metrics(
    split: str,
    costs: Costs,
    episodes: Sequence[Episode],
    tasks: TaskLookup,
    env: ClarifyEnv,
    baselines: Mapping[str, Agent],
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> PointMetrics:
    """The metrics of ``episodes`` (all played at ``costs``); ``env`` sets the rules the
    oracle and the baselines are scored under."""
    n = len(episodes)
    task_of = {e.task_id: tasks(e.task_id) for e in episodes}
    values = {tid: _move_values(t, costs, env.rules) for tid, t in task_of.items()}
    oracle = {tid: best(v) for tid, v in values.items()}
    optimal = {tid: optimal_moves(vs) for tid, vs in values.items()}
    oracle_moves = [oracle[e.task_id].move.value for e in episodes]
    firsts = collections.Counter(e.first_move for e in episodes)
    oracle_firsts = collections.Counter(oracle_moves)
    rewards = [e.reward for e in episodes]
    low, high = bootstrap_ci(rewards, bootstrap_samples, seed)
    expected = _mean([e.expected_reward for e in episodes])
    oracle_reward = _mean([oracle[e.task_id].expected_reward for e in episodes])
    answered = [e for e in episodes if e.outcome == "answered"]
    return PointMetrics(
        split=split,
        question=costs.question,
        word=costs.word,
        n=n,
        reward=_mean(rewards),
        reward_ci_low=low,
        reward_ci_high=high,
        expected_reward=expected,
        f1=_mean([e.components["f1"] for e in episodes]),
        exact_match=_mean([e.components["exact_match"] for e in episodes]),
        answer_rate=firsts["ANSWER"] / n,
        multi_rate=firsts["MULTI"] / n,
        clarify_rate=firsts["CLARIFY"] / n,
        error_rate=sum(e.outcome == "protocol_error" for e in episodes) / n,
        truncation_rate=sum(e.outcome == "truncated" for e in episodes) / n,
        questions=_mean([e.components["questions"] for e in episodes]),
        words=_mean([e.components["words"] for e in answered]),
        oracle_reward=oracle_reward,
        regret=oracle_reward - expected,
        move_regret=oracle_reward - _mean([_first_move_value(e, values[e.task_id]) for e in episodes]),
        oracle_agreement=sum(e.first_move in optimal[e.task_id] for e in episodes) / n,
        oracle_answer_rate=oracle_firsts["ANSWER"] / n,
        oracle_multi_rate=oracle_firsts["MULTI"] / n,
        oracle_clarify_rate=oracle_firsts["CLARIFY"] / n,
        oracle_words=_mean([oracle[e.task_id].expected_words for e in episodes]),
        baselines=baseline_values(baselines, episodes, task_of, costs, env),
    )


def baseline_values(
    baselines: Mapping[str, Agent],
    episodes: Sequence[Episode],
    task_of: Mapping[str, Task],
    costs: Costs,
    env: ClarifyEnv,
) -> dict[str, dict[str, float]]:
    """Each fixed baseline's exact expected reward and words on the episodes' tasks (``policy_expectation``)."""
    task_counts = collections.Counter(e.task_id for e in episodes)
    n = len(episodes)
    reference = {}
    for name, policy in baselines.items():
        per_task = {tid: policy_expectation(env, policy, task_of[tid], costs) for tid in task_counts}
        reference[name] = {
            "reward": sum(c * per_task[t][0] for t, c in task_counts.items()) / n,
            "words": sum(c * per_task[t][1] for t, c in task_counts.items()) / n,
        }
    return reference


def evaluate_episodes(
    episodes: Sequence[Episode],
    tasks: TaskLookup | Mapping[str, Task],
    split: str = "",
    rules: Rules = Rules(),
    baselines: Sequence[str] = DEFAULT_BASELINES,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> list[PointMetrics]:
    """Metrics per price point of ``episodes`` (grouped by their costs, in price order).

    ``tasks`` finds an episode's task by id (``task_lookup(source)`` or a dict); ``rules`` are
    the ones the episodes were played under; ``baselines`` are names of ``agents.make_baseline``
    (``"oracle"`` included).
    """
    from agents import make_baseline

    if not episodes:
        raise ValueError("no episodes to evaluate")
    lookup = tasks.__getitem__ if isinstance(tasks, Mapping) else tasks
    scorer = ClarifyEnv(source="synthetic", rules=rules)  # tasks and prices are passed to each reset
    policies = {name: make_baseline(name, rules) for name in baselines}
    by_costs: dict[tuple[float, float], list[Episode]] = collections.defaultdict(list)
    for e in episodes:
        by_costs[(e.costs["question"], e.costs["word"])].append(e)
    return [
        point_metrics(split, Costs(*key), group, lookup, scorer, policies, bootstrap_samples, seed)
        for key, group in sorted(by_costs.items())
    ]
