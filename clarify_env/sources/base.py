"""The task-source interface and a finite in-memory source."""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence, runtime_checkable

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
