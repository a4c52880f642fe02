"""How good are the episodes ReST learns from? Their first moves against the oracle's, and the
answer after a clarification against chance.

Two numbers explain most stalled ReST runs: the kept episodes' **oracle agreement** (the
filter can only teach the price dependence its labels carry) and the **follow-up accuracy**
(right answers after a CLARIFY; when it sits at chance, 1 / number of meanings, the policy
guesses the meaning instead of reading the user's reply, so the filter drops CLARIFY however
cheap questions are). ``clarify train`` logs both every iteration (``grow/...``,
``filter/kept_...``). From the shell, with the breakdowns::

    python -m trainers.label_audit runs/quickstart/iter-1/grow.jsonl [--source synthetic]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from clarify_env.costs import Costs
from clarify_env.oracle import best, move_values, optimal_moves, task_meanings
from clarify_env.tasks import Task
from trainers.episodes import Episode


def audit_episodes(
    episodes: Sequence[Episode], tasks: Callable[[str], Task], env: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """Label quality of ``episodes``; ``tasks`` finds a task by id, ``env`` holds the rules
    (``max_questions``, ``accuracy_metric``) the episodes were played under.

    Returns ``oracle_agreement`` (share whose first move is one of the oracle's best at the
    episode's prices), ``followup_accuracy`` (mean accuracy of episodes that clarified and
    then answered, NaN without any) and ``followup_chance`` (their mean 1 / number of meanings).
    """
    return summarize_rows(audit_rows(episodes, tasks, env))


def summarize_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``audit_episodes``'s numbers from ``audit_rows``' rows (of any subset of episodes)."""
    agree = [r["agrees"] for r in rows]
    followup = [r["accuracy"] for r in rows if r["followup"]]
    chance = [1.0 / r["meanings"] for r in rows if r["followup"]]
    nan = float("nan")
    return {
        "oracle_agreement": float(np.mean(agree)) if agree else nan,
        "followup_accuracy": float(np.mean(followup)) if followup else nan,
        "followup_chance": float(np.mean(chance)) if chance else nan,
    }


def audit_rows(
    episodes: Sequence[Episode], tasks: Callable[[str], Task], env: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Per episode: its id, its first move, the oracle's, whether the first is among the oracle's best
    (``agrees``), the number of meanings, and for a clarify-then-answer episode (``followup``)
    its accuracy."""
    env = env or {}
    max_questions, metric = env.get("max_questions", 1), env.get("accuracy_metric", "f1")
    cache: dict[str, Task] = {}
    rows = []
    for e in episodes:
        if e.task_id not in cache:
            cache[e.task_id] = tasks(e.task_id)
        task = cache[e.task_id]
        values = move_values(task_meanings(task), Costs(e.costs["question"], e.costs["word"]), task.query,
                             max_questions, metric)
        rows.append({
            "episode_id": e.episode_id, "move": e.first_move, "oracle": best(values).move.value,
            "meanings": len(task.interpretations), "agrees": e.first_move in optimal_moves(values),
            "followup": e.first_move == "CLARIFY" and e.outcome == "answered",
            "accuracy": e.components.get("accuracy", 0.0),
        })
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from trainers.episodes import read_episodes
    from trainers.evaluate import task_lookup

    p = argparse.ArgumentParser(description="Audit episodes against the oracle (first moves, answers after CLARIFY).")
    p.add_argument("episodes", nargs="+", help="episode JSON Lines files (grow.jsonl, kept.jsonl, ...)")
    p.add_argument("--source", default="synthetic", help="the task source the episodes were played on")
    args = p.parse_args(argv)
    missing = [path for path in args.episodes if not Path(path).is_file()]
    if missing:
        p.error(f"no such episode file: {', '.join(missing)}")
    tasks = task_lookup(args.source)
    for path in args.episodes:
        rows = audit_rows(read_episodes(path), tasks)
        if not rows:
            print(f"{path}: no episodes")
            continue
        agree = summarize_rows(rows)["oracle_agreement"]
        print(f"{path}: {len(rows)} episodes, first move among the oracle's best in {agree:.3f}")
        pairs = collections.Counter((r["oracle"], r["move"]) for r in rows)
        moves = ("ANSWER", "MULTI", "CLARIFY", "ERROR")
        print("oracle \\ played  " + "  ".join(f"{m:>7}" for m in moves))
        for o in moves[:3]:
            print(f"{o:>15}  " + "  ".join(f"{pairs[(o, m)]:>7}" for m in moves))
        by_n = collections.defaultdict(list)
        for r in rows:
            if r["followup"]:
                by_n[r["meanings"]].append(r["accuracy"])
        for n, acc in sorted(by_n.items()):
            print(f"answers after CLARIFY, {n} meaning(s): {sum(acc) / len(acc):.3f} right of {len(acc)} (chance {1 / n:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
