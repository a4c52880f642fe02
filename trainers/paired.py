"""Point-by-point head-to-head of one policy against others evaluated on the same episodes.

An evaluation draws the same tasks and hidden meanings for every policy (same seed, same
points), so two policies' episodes pair up one to one. The paired difference of their rewards
has a much narrower interval than either mean's: this is the test that says whether a trained
policy beats the same model forced to one move *at a given price*, not only on average.

Each comparison gets two verdicts: ``paired`` (the bootstrap 95% interval of the mean paired
difference lies above 0, below 0, or spans it) and ``outside_ci`` (the policy's mean lies above
or below the other policy's own 95% interval, the rule a reader can check from two tables).
"""

from __future__ import annotations

import collections
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clarify_env.costs import Costs
from trainers.episodes import Episode, read_episodes
from trainers.eval_report import EvalReport
from trainers.evaluate import point_path


@dataclass(frozen=True)
class PairedPoint:
    """``policy`` against ``other`` at one price point: their mean rewards, the mean paired
    difference with its bootstrap 95% interval over ``pairs`` matched episodes, and the verdicts
    (``above``, ``below`` or ``tie``)."""

    split: str
    question: float
    word: float
    policy: str
    other: str
    reward: float
    other_reward: float
    other_ci_low: float
    other_ci_high: float
    pairs: int
    difference: float
    difference_ci_low: float
    difference_ci_high: float
    paired: str
    outside_ci: str


def _key_counts(episodes: Sequence[Episode]) -> dict[tuple, float]:
    """Each episode's reward under (task, meaning, occurrence): the key two evaluations share."""
    seen: collections.Counter = collections.Counter()
    out = {}
    for e in episodes:
        key = (e.task_id, e.interpretation)
        out[(*key, seen[key])] = e.reward
        seen[key] += 1
    return out


def paired_difference(
    mine: Sequence[Episode], theirs: Sequence[Episode], samples: int = 2000, seed: int = 0
) -> tuple[int, float, float, float]:
    """(pairs, mean difference, 95% low, 95% high) of ``mine`` − ``theirs`` over the episodes
    matched by task and meaning; a ``ValueError`` unless every episode of each has its pair (not
    the same draws: another seed, task file or episode count; a partial match would pair a
    sample of the episodes that neither mean is about)."""
    a, b = _key_counts(mine), _key_counts(theirs)
    keys = sorted(set(a) & set(b), key=str)
    if not keys or a.keys() != b.keys():
        raise ValueError(
            f"{len(keys)} of {len(a)} and {len(b)} episodes pair up (different tasks or meanings: another seed, "
            "task file or episode count): these evaluations are not paired"
        )
    d = np.array([a[k] - b[k] for k in keys])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(samples, d.size))].mean(axis=1)
    return len(keys), float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _verdict(low: float, high: float, value: float = 0.0) -> str:
    return "above" if low > value else "below" if high < value else "tie"


def head_to_head(
    reports: Sequence[EvalReport], folders: Sequence[Path], samples: int = 2000, seed: int = 0
) -> list[PairedPoint]:
    """The first report's policy against every other at every point both hold (episodes read
    from each evaluation's folder)."""
    (mine, my_folder), others = (reports[0], folders[0]), list(zip(reports[1:], folders[1:]))
    out = []
    for point in mine.points:
        costs = Costs(question=point.question, word=point.word)
        my_episodes = read_episodes(point_path(my_folder, point.split, costs))
        for report, folder in others:
            match = [
                p for p in report.points if (p.split, p.question, p.word) == (point.split, point.question, point.word)
            ]
            if not match:
                continue
            theirs = match[0]
            try:
                pairs, diff, low, high = paired_difference(
                    my_episodes, read_episodes(point_path(folder, point.split, costs)), samples, seed
                )
            except ValueError:  # not the same draws: no paired verdict (``unpaired`` names them)
                continue
            outside = (
                "above"
                if point.reward > theirs.reward_ci_high
                else "below"
                if point.reward < theirs.reward_ci_low
                else "tie"
            )
            out.append(
                PairedPoint(
                    point.split,
                    point.question,
                    point.word,
                    mine.policy,
                    report.policy,
                    point.reward,
                    theirs.reward,
                    theirs.reward_ci_low,
                    theirs.reward_ci_high,
                    pairs,
                    diff,
                    low,
                    high,
                    _verdict(low, high),
                    outside,
                )
            )
    return out


def unpaired(reports: Sequence[EvalReport], rows: Sequence[PairedPoint]) -> list[str]:
    """The policies after the first that ``head_to_head`` gave no paired verdict against at any point."""
    paired = {r.other for r in rows}
    return [r.policy for r in reports[1:] if r.policy not in paired]


def markdown(rows: Sequence[PairedPoint]) -> str:
    """One line per point, one column per other policy: its reward and the paired difference."""
    if not rows:
        return ""
    others = list(dict.fromkeys(r.other for r in rows))
    points = list(dict.fromkeys((r.split, r.question, r.word) for r in rows))
    mark = {"above": "▲", "below": "▼", "tie": "="}
    lines = [
        f"# {rows[0].policy} against each policy, point by point (paired on the same episodes)",
        "",
        "| split | α | β | " + rows[0].policy + " | " + " | ".join(others) + " |",
        "|" + "---|" * (4 + len(others)),
    ]
    for split, q, w in points:
        at = {r.other: r for r in rows if (r.split, r.question, r.word) == (split, q, w)}
        mine = next(iter(at.values())).reward
        cells = [
            f"{at[o].other_reward:.3f} (Δ {at[o].difference:+.3f} [{at[o].difference_ci_low:+.3f}, "
            f"{at[o].difference_ci_high:+.3f}] {mark[at[o].paired]})"
            if o in at
            else "-"
            for o in others
        ]
        lines.append(f"| {split} | {q:g} | {w:g} | {mine:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "| against | above (paired) | tie | below | below the other's 95% CI |", "|---|---|---|---|---|"]
    for o in others:
        mine_rows = [r for r in rows if r.other == o]
        count = collections.Counter(r.paired for r in mine_rows)
        below_ci = sum(r.outside_ci == "below" for r in mine_rows)
        lines.append(f"| {o} | {count['above']} | {count['tie']} | {count['below']} | {below_ci} |")
    lines += [
        "",
        "Δ: the mean paired reward difference with its bootstrap 95% interval; ▲ above 0, ▼ below, = spans 0.",
        "",
    ]
    return "\n".join(lines)


def write_head_to_head(rows: Sequence[PairedPoint], out: Path) -> dict[str, Path]:
    """``compare_points.json`` and ``compare_points.md`` in ``out``."""
    paths = {"points_json": out / "compare_points.json", "points_markdown": out / "compare_points.md"}
    paths["points_json"].write_text(json.dumps([asdict(r) for r in rows], indent=2))
    paths["points_markdown"].write_text(markdown(rows))
    return paths
