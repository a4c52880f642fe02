"""How good are the episodes ReST learns from? Their first moves against the oracle's, and the
answer after a clarification against chance.

Two numbers explain most stalled ReST runs: the kept episodes' **oracle agreement** (the
filter can only teach the price dependence its labels carry) and the **follow-up accuracy**
(right answers after a CLARIFY; when it sits at chance, 1 / number of meanings, the policy
guesses the meaning instead of reading the user's reply, so the filter drops CLARIFY however
cheap questions are). ``clarify train`` logs both every iteration (``grow/...``,
``filter/kept_...``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from clarify_env.costs import Costs
from clarify_env.oracle import best, move_values, task_meanings
from clarify_env.tasks import Task
from trainers.episodes import Episode

TIE = 1e-9  # moves whose expected rewards differ by less are equally good (as in trainers.evaluate)


def audit_episodes(
    episodes: Sequence[Episode], tasks: Callable[[str], Task], env: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """Label quality of ``episodes``; ``tasks`` finds a task by id, ``env`` holds the rules
    (``max_questions``, ``accuracy_metric``) the episodes were played under.

    Returns ``oracle_agreement`` (share whose first move is one of the oracle's best at the
    episode's prices), ``followup_accuracy`` (mean accuracy of episodes that clarified and
    then answered, NaN without any) and ``followup_chance`` (their mean 1 / number of meanings).
    """
    env = env or {}
    max_questions, metric = env.get("max_questions", 1), env.get("accuracy_metric", "f1")
    cache: dict[str, Task] = {}
    agree, followup, chance = [], [], []
    for e in episodes:
        task = cache.get(e.task_id) or cache.setdefault(e.task_id, tasks(e.task_id))
        values = move_values(task_meanings(task), Costs(e.costs["question"], e.costs["word"]), task.query,
                             max_questions, metric)
        top = best(values).expected_reward
        agree.append(any(m.value == e.first_move and v.expected_reward >= top - TIE for m, v in values.items()))
        if e.first_move == "CLARIFY" and e.outcome == "answered":
            followup.append(e.components["accuracy"])
            chance.append(1.0 / len(task.interpretations))
    nan = float("nan")
    return {
        "oracle_agreement": float(np.mean(agree)) if agree else nan,
        "followup_accuracy": float(np.mean(followup)) if followup else nan,
        "followup_chance": float(np.mean(chance)) if chance else nan,
    }
