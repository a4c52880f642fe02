"""Does ``sampling.max_new_tokens`` leave room for the answers the policy has to write?

A MULTI move lists every meaning with its answer; with many meanings or long answers
it can run past the generation budget, and a cut-off list silently costs accuracy (the
last answers are lost) while the fixed baselines and the oracle, which never generate,
are not cut. ``generation_budget`` measures, before a run spends time on it, how many
training tasks' full MULTI message (every interpretation with its first answer, as the
``always_multi`` baseline writes it, plus the end-of-turn token) is longer than the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from clarify_env.protocol import multi
from clarify_env.sources import ListSource, make_source
from clarify_env.tasks import Task


@dataclass(frozen=True)
class BudgetReport:
    """Token lengths of the full MULTI message over sampled tasks, against the budget."""

    max_new_tokens: int
    tasks: int
    cut: int  # tasks whose full MULTI message (with the end token) needs more tokens than the budget
    longest: int

    @property
    def cut_share(self) -> float:
        return self.cut / self.tasks

    def warning(self) -> str | None:
        """A one-line warning when some full answers do not fit, else None."""
        if not self.cut:
            return None
        return (
            f"[check] sampling.max_new_tokens={self.max_new_tokens} cuts the full MULTI answer of "
            f"{self.cut} of {self.tasks} sampled training tasks ({self.cut_share:.1%}; longest "
            f"{self.longest} tokens with the end token): those answers lose their last items. "
            f"Set sampling.max_new_tokens to at least {self.longest} to give every move room."
        )


def full_multi_message(task: Task) -> str:
    """The MULTI message naming every interpretation of ``task`` with its first answer."""
    return multi([(i.facet, i.answer) for i in task.interpretations])


def multi_token_lengths(tasks: Sequence[Task], tokenizer: Any) -> np.ndarray:
    """Tokens each task's full MULTI message takes as an assistant turn (its text and the end token)."""
    texts = [full_multi_message(t) for t in tasks]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return np.array([len(row) + 1 for row in ids], dtype=np.int64)


def generation_budget(
    source: Any, tokenizer: Any, max_new_tokens: int, num_tasks: int = 1000, seed: int = 0
) -> BudgetReport:
    """Sample ``num_tasks`` tasks from ``source`` (any ``make_source`` spec; a file of at
    most ``num_tasks`` tasks is read whole) and measure their full MULTI messages in ``tokenizer``'s tokens against ``max_new_tokens``."""
    src = make_source(source)
    if isinstance(src, ListSource) and len(src) <= num_tasks:  # a small file: every task
        tasks = list(src)
    else:
        rng = np.random.default_rng(seed)
        tasks = [src.sample(rng) for _ in range(num_tasks)]
    lengths = multi_token_lengths(tasks, tokenizer)
    return BudgetReport(
        max_new_tokens=max_new_tokens,
        tasks=len(lengths),
        cut=int((lengths > max_new_tokens).sum()),
        longest=int(lengths.max()),
    )
