"""Evaluation at fixed prices: per-point metrics against the oracle and the fixed baselines,
steerability, and plots.

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

import argparse
import collections
import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from agents.base import Agent
from clarify_env.costs import Costs, make_cost_sampler
from clarify_env.env import ClarifyEnv
from clarify_env.oracle import MoveValue, best, move_values, optimal_moves, policy_expectation, task_meanings
from clarify_env.sources import make_source
from clarify_env.specs import parse_cli_spec
from clarify_env.tasks import Task
from trainers.episodes import Episode, read_episodes

RULES = ("max_questions", "protocol_error_penalty", "accuracy_metric")  # the env settings scoring depends on
DEFAULT_BASELINES = ("always_answer", "always_multi", "always_clarify")
TaskLookup = Callable[[str], Task]


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


# --- tasks -------------------------------------------------------------------------------

def task_lookup(source: Any) -> TaskLookup:
    """A function from task id to task for a source spec: synthetic tasks are rebuilt from
    their ids (``from_id``), finite sources are looked up (``get``)."""
    built = make_source(source)
    for method in ("from_id", "get"):
        if hasattr(built, method):
            return getattr(built, method)
    raise ValueError(f"task source {getattr(built, 'name', source)!r} cannot look tasks up by id (no from_id or get)")


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


def _rho_lines(values: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """``- name: policy / oracle`` lines of a steerability mapping, for the markdown table."""
    return [
        f"- {name}: " + " / ".join("undefined" if x is None else f"{x:+.2f}" for x in (rho["policy"], rho["oracle"]))
        for name, rho in values.items()
    ]


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


def _move_values(task: Task, costs: Costs, env: ClarifyEnv) -> dict[Any, MoveValue]:
    """Every move's exact expected reward on ``task`` (what ``oracle_value`` maximises)."""
    return move_values(task_meanings(task), costs, task.query, env.max_questions, env.accuracy_metric)


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
    values = {tid: _move_values(t, costs, env) for tid, t in task_of.items()}
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
    task_counts = collections.Counter(e.task_id for e in episodes)
    reference = {}
    for name, policy in baselines.items():
        per_task = {tid: policy_expectation(env, policy, task_of[tid], costs) for tid in task_counts}
        reference[name] = {
            "reward": sum(c * per_task[t][0] for t, c in task_counts.items()) / n,
            "words": sum(c * per_task[t][1] for t, c in task_counts.items()) / n,
        }
    return PointMetrics(
        split=split, question=costs.question, word=costs.word, n=n,
        reward=_mean(rewards), reward_ci_low=low, reward_ci_high=high, expected_reward=expected,
        f1=_mean([e.components["f1"] for e in episodes]),
        exact_match=_mean([e.components["exact_match"] for e in episodes]),
        answer_rate=firsts["ANSWER"] / n, multi_rate=firsts["MULTI"] / n, clarify_rate=firsts["CLARIFY"] / n,
        error_rate=sum(e.outcome == "protocol_error" for e in episodes) / n,
        truncation_rate=sum(e.outcome == "truncated" for e in episodes) / n,
        questions=_mean([e.components["questions"] for e in episodes]),
        words=_mean([e.components["words"] for e in answered]),
        oracle_reward=oracle_reward, regret=oracle_reward - expected,
        move_regret=oracle_reward - _mean([_first_move_value(e, values[e.task_id]) for e in episodes]),
        oracle_agreement=sum(e.first_move in optimal[e.task_id] for e in episodes) / n,
        oracle_answer_rate=oracle_firsts["ANSWER"] / n, oracle_multi_rate=oracle_firsts["MULTI"] / n,
        oracle_clarify_rate=oracle_firsts["CLARIFY"] / n,
        oracle_words=_mean([oracle[e.task_id].expected_words for e in episodes]),
        baselines=reference,
    )


def evaluate_episodes(
    episodes: Sequence[Episode],
    tasks: TaskLookup | Mapping[str, Task],
    split: str = "",
    env: Mapping[str, Any] | None = None,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> list[PointMetrics]:
    """Metrics per price point of ``episodes`` (grouped by their costs, in price order).

    ``tasks`` finds an episode's task by id (``task_lookup(source)`` or a dict); ``env``
    holds the ``ClarifyEnv`` rules the episodes were played under (``max_questions``,
    ``protocol_error_penalty``, ``accuracy_metric``); ``baselines`` are names of
    ``agents.make_baseline`` or ``"oracle"``.
    """
    if not episodes:
        raise ValueError("no episodes to evaluate")
    lookup = tasks.__getitem__ if isinstance(tasks, Mapping) else tasks
    rules = {k: v for k, v in (env or {}).items() if k in RULES}
    scorer = ClarifyEnv(source="synthetic", **rules)  # tasks and prices are passed to each reset
    policies = {name: make_policy(name, scorer.max_questions) for name in baselines}
    by_costs: dict[tuple[float, float], list[Episode]] = collections.defaultdict(list)
    for e in episodes:
        by_costs[(e.costs["question"], e.costs["word"])].append(e)
    return [
        point_metrics(split, Costs(*key), group, lookup, scorer, policies, bootstrap_samples, seed)
        for key, group in sorted(by_costs.items())
    ]


def make_policy(name: str, max_questions: int = 1) -> Agent:
    """A scripted assistant by name: ``oracle`` or a baseline of ``agents.baselines``."""
    from agents import OraclePolicy, make_baseline

    return OraclePolicy(max_questions) if name == "oracle" else make_baseline(name)


# --- reports -------------------------------------------------------------------------------

SUMMARIZED = (
    "reward", "regret", "move_regret", "oracle_agreement", "clarify_rate", "multi_rate", "answer_rate", "error_rate",
    "words",
)


@dataclass
class EvalReport:
    """The evaluation of one policy: per-point metrics and steerability; ``files`` are the
    paths ``write`` wrote (json, markdown, csv and the plots by name)."""

    policy: str
    points: list[PointMetrics]
    steerability: dict[str, dict[str, float | None]]
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def from_points(cls, policy: str, points: Sequence[PointMetrics]) -> "EvalReport":
        return cls(policy, list(points), steerability(points))

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "points": [asdict(p) for p in self.points], "steerability": self.steerability}

    def summary(self) -> dict[str, float]:
        """Scalars to log: per split the mean over its points of each ``SUMMARIZED`` metric
        (``"<split>/<metric>"``) and the policy's defined steerability correlations within the
        split (``"<split>/steerability/<name>"``), and over all points (``"steerability/<name>"``)."""
        out = {}
        for split, values in self.split_steerability().items():
            points = [p for p in self.points if p.split == split]
            out.update({f"{split}/{m}": float(np.mean([getattr(p, m) for p in points])) for m in SUMMARIZED})
            out.update({f"{split}/steerability/{k}": v["policy"] for k, v in values.items() if v["policy"] is not None})
        out.update({f"steerability/{k}": v["policy"] for k, v in self.steerability.items() if v["policy"] is not None})
        return out

    def split_steerability(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """``steerability`` of each split's points alone (e.g. the held-out prices without
        the extrapolation ones), by split."""
        splits = dict.fromkeys(p.split for p in self.points)
        return {s: steerability([p for p in self.points if p.split == s]) for s in splits}

    def to_markdown(self) -> str:
        """A table with one row per price point, then the steerability correlations."""
        names = list(self.points[0].baselines) if self.points else []
        head = ["split", "alpha", "beta", "n", "reward [95% CI]", "oracle", "regret", "move regret", "agree",
                "clarify", "multi", "answer", "errors", "q/ep", "words", *names]
        lines = [f"### {self.policy}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in self.points:
            cells = [p.split, f"{p.question:g}", f"{p.word:g}", str(p.n),
                     f"{p.reward:.3f} [{p.reward_ci_low:.3f}, {p.reward_ci_high:.3f}]", f"{p.oracle_reward:.3f}",
                     f"{p.regret:.3f}", f"{p.move_regret:.3f}", f"{p.oracle_agreement:.2f}", f"{p.clarify_rate:.2f}",
                     f"{p.multi_rate:.2f}", f"{p.answer_rate:.2f}", f"{p.error_rate:.2f}", f"{p.questions:.2f}", f"{p.words:.1f}",
                     *(f"{p.baselines[n]['reward']:.3f}" for n in names)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Steerability (Spearman rho along each price, the other held fixed; policy / oracle):", ""]
        lines += _rho_lines(self.steerability)
        by_split = self.split_steerability()
        if len(by_split) > 1:
            for split, values in by_split.items():
                lines += ["", f"Within {split} only:", "", *_rho_lines(values)]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write eval.json, eval.md, eval.csv and the plots to ``out_dir``; returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "eval.json", "markdown": out / "eval.md", "csv": out / "eval.csv"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2))
        paths["markdown"].write_text(self.to_markdown())
        rows = [p.to_row() for p in self.points]
        with paths["csv"].open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        paths.update(plot_points(self.points, out, self.policy))
        self.files = paths
        return paths


PLOTTED = (  # (metric, panel title)
    ("reward", "reward (oracle, baselines: expected)"), ("clarify_rate", "CLARIFY rate"),
    ("multi_rate", "MULTI rate"), ("answer_rate", "ANSWER rate"), ("words", "words per final response"),
)


def plot_points(points: Sequence[PointMetrics], out_dir: Path, policy: str = "policy") -> dict[str, Path]:
    """One PNG per price (``vs_question_price.png``, ``vs_word_price.png``): each rate, the
    reward and the words against that price along the longest sweep holding the other
    price fixed; policy, oracle, and (reward and words) the fixed baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(points[0].baselines) if points else []
    paths = {}
    for price in ("question", "word"):
        sweep = sweeps_along(points, price)[0] if points else []
        xs = [getattr(p, price) for p in sweep]
        at = {getattr(p, price): [p] for p in sweep}
        other = "word" if price == "question" else "question"

        def series(get: Callable[[PointMetrics], float]) -> list[float]:
            return [float(np.mean([get(p) for p in at[x]])) for x in xs]

        fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4 * len(PLOTTED), 3.4))
        for ax, (metric, label) in zip(axes, PLOTTED):
            oracle_metric = "oracle_reward" if metric == "reward" else f"oracle_{metric}"
            ax.plot(xs, series(lambda p: getattr(p, metric)), marker="o", lw=2, label=policy)
            ax.plot(xs, series(lambda p: getattr(p, oracle_metric)), marker="s", ls="--", color="black", label="oracle")
            if metric in ("reward", "words"):
                key = "reward" if metric == "reward" else "words"
                for name in names:
                    ax.plot(xs, series(lambda p: p.baselines[name][key]), ls=":", marker=".", label=name)
            ax.set_xlabel(f"price of a {price}")
            ax.set_title(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        if sweep:
            fig.suptitle(f"{other} price fixed at {getattr(sweep[0], other):g}", fontsize=9)
        fig.tight_layout()
        paths[f"vs_{price}_price"] = out_dir / f"vs_{price}_price.png"
        fig.savefig(paths[f"vs_{price}_price"], dpi=100)
        plt.close(fig)
    return paths


# --- running a policy ----------------------------------------------------------------------

def split_specs(text: str) -> list[str]:
    """``"default:heldout,{...JSON...}"`` -> its specs: commas inside braces or brackets do not split."""
    specs, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "{[") - (ch in "}]")
        if ch == "," and depth == 0:
            specs.append(current.strip())
            current = ""
        else:
            current += ch
    return [s for s in (*specs, current.strip()) if s]


def split_points(specs: Sequence[str]) -> dict[str, list[Costs]]:
    """Price points per split spec (``"default:heldout"``, or a JSON cost spec of a grid or
    a fixed point); a sampler without a finite set of points is an error naming the spec."""
    out = {}
    for spec in specs:
        sampler = make_cost_sampler(parse_cli_spec(spec))
        if not hasattr(sampler, "points"):
            raise ValueError(
                f"cost spec {spec!r} has no finite grid of points to evaluate at (use a grid or a fixed point)"
            )
        out[spec] = sampler.points()
    return out


def evaluate_policy(
    assistant: Agent,
    cost_points: Mapping[str, Sequence[Costs]],
    episodes_per_point: int | Mapping[str, int],
    env: Mapping[str, Any],
    seed: int,
    out_dir: str | Path,
    user: Agent | None = None,
    num_envs: int = 64,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    bootstrap_samples: int = 1000,
    policy_name: str | None = None,
    progress: bool = False,
) -> EvalReport:
    """Play ``episodes_per_point`` episodes (one number, or one per split of ``cost_points``)
    at every price point with the rollout engine (the same tasks at every point: the task
    stream depends on ``seed`` alone), evaluate them and write the report to ``out_dir`` (episode files in ``out_dir/episodes``: a
    killed evaluation resumes). ``env`` holds ``ClarifyEnv`` keyword arguments (its
    ``costs`` is replaced by each point); ``user`` defaults to the scripted user.
    """
    from agents.scripted_user import ScriptedUser
    from trainers.rollout import RolloutEngine

    user = user or ScriptedUser()
    out = Path(out_dir)
    source = make_source(env.get("source", "synthetic"))  # built once: every env of every point shares it
    lookup = task_lookup(source)
    points = []
    for split, grid in cost_points.items():
        count = episodes_per_point[split] if isinstance(episodes_per_point, Mapping) else episodes_per_point
        for costs in grid:
            engine = RolloutEngine(
                {**env, "source": source, "costs": costs.to_dict()}, assistant, user,
                num_envs=min(num_envs, count), samples_per_group=1, seed=seed, policy_name=policy_name,
            )
            path = out / "episodes" / f"{split.replace(':', '-')}_q{costs.question:g}_w{costs.word:g}.jsonl"
            others = {e.policy for e in read_episodes(path)} - {engine.policy_name}
            if others:
                raise ValueError(f"{path} holds episodes of {sorted(others)}, not {engine.policy_name!r}: use another out_dir")
            episodes = engine.run(count, path, progress=progress)
            points += evaluate_episodes(episodes, lookup, split, env, baselines, bootstrap_samples, seed)
    report = EvalReport.from_points(policy_name or assistant.name, points)
    report.write(out)
    return report


def _run(args: argparse.Namespace) -> int:
    from trainers.config import load_config
    from trainers.rollout import env_kwargs

    cfg = load_config(args.config, args.overrides)
    specs = split_specs(args.split) if args.split else cfg.eval.splits
    per_point = args.episodes_per_point or cfg.eval.episodes_per_point
    default_name = args.policy or Path(args.adapter or "base").name
    out = Path(args.out) if args.out else Path(cfg.run_dir) / "eval" / default_name
    if args.policy:
        assistant, user, name = make_policy(args.policy, cfg.env.max_questions), None, args.policy
        if cfg.user.kind != "scripted":
            raise SystemExit("clarify eval --policy plays against the scripted user; set user.kind=scripted")
    else:
        from trainers.models import load_policy_model, make_agents, make_backend

        cfg.model.adapter = args.adapter or cfg.model.adapter
        cfg.sampling.temperature = cfg.eval.temperature
        assistant, user = make_agents(cfg, make_backend(cfg.model, load_policy_model(cfg)))
        name = Path(cfg.model.adapter).name if cfg.model.adapter else "base"
    report = evaluate_policy(
        assistant, split_points(specs), per_point, env_kwargs(cfg.env), cfg.seed, out, user=user,
        num_envs=cfg.rollout.num_envs, baselines=cfg.eval.baselines,
        bootstrap_samples=cfg.eval.bootstrap_samples, policy_name=name, progress=not args.quiet,
    )
    print(report.to_markdown())
    print(f"wrote {out / 'eval.md'}, eval.json, eval.csv and plots")
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a policy at fixed prices (held-out and extrapolation grids)")
    p.add_argument("--config", default=None, help="run config YAML (model, env, eval sections)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--adapter", default=None, help="a LoRA adapter dir on top of the config's model")
    who.add_argument("--policy", default=None,
                     help="a scripted policy instead of the model: oracle, always_answer, always_multi, "
                     "always_clarify, random_mixture")
    p.add_argument("--split", default=None,
                   help="comma-separated cost splits or JSON grids (default: eval.splits), "
                   "e.g. default:heldout,default:extrapolation")
    p.add_argument("--episodes-per-point", type=int, default=None, help="default: eval.episodes_per_point")
    p.add_argument("--out", default=None, help="output dir (default: <run_dir>/eval/<policy>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    p.set_defaults(func=_run)
