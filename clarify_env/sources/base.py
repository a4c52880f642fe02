"""The task-source interface and a finite in-memory source."""

from __future__ import annotations

import hashlib
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from clarify_env.tasks import Task


@runtime_checkable
class TaskSource(Protocol):
    """Where tasks come from. ``sample`` must be deterministic given the generator."""

    name: str

    def sample(self, rng: np.random.Generator) -> Task: ...


class ListSource:
    """A finite list of tasks (loaded from a file, say); samples uniformly, iterates in order."""

    def __init__(self, tasks: Sequence[Task], name: str = "list") -> None:
        if not tasks:
            raise ValueError(f"task source {name!r} holds no tasks")
        self.tasks = list(tasks)
        self.name = name
        self._by_id = {t.id: t for t in self.tasks}

    def sample(self, rng: np.random.Generator) -> Task:
        return self.tasks[int(rng.integers(len(self.tasks)))]

    def get(self, task_id: str) -> Task:
        return self._by_id[task_id]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __getitem__(self, index: int) -> Task:
        return self.tasks[index]


SPLITS = ("train", "dev", "all")


def in_dev(task_id: str, dev_fraction: float, split_seed: int = 0) -> bool:
    """Whether a task belongs to the dev split: a hash of its id (and the split seed) below the
    fraction. Deterministic, and stable as tasks are added to or removed from a file."""
    digest = hashlib.sha256(f"{split_seed}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < dev_fraction


def split_tasks(tasks: Sequence[Task], split: str, dev_fraction: float, split_seed: int = 0) -> list[Task]:
    """The tasks of ``split`` ("train", "dev" or "all"), in their order (``in_dev``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction!r}")
    if split == "all":
        return list(tasks)
    return [t for t in tasks if in_dev(t.id, dev_fraction, split_seed) == (split == "dev")]


def split_source(
    tasks: Sequence[Task], path: Any, name: str, split: str, dev_fraction: float, split_seed: int
) -> ListSource:
    """A file's tasks of one split as a source named ``name:split``; an empty split is an error."""
    try:
        chosen = split_tasks(tasks, split, dev_fraction, split_seed)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not chosen:
        raise ValueError(
            f"{path}: the {split} split (dev_fraction {dev_fraction}) holds none of its {len(tasks)} tasks"
        )
    return ListSource(chosen, name=name if split == "all" else f"{name}:{split}")
