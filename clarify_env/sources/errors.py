"""The error raised when a task file is malformed: it names the file, line and field."""

from __future__ import annotations

from pathlib import Path

from clarify_env.tasks import TaskError


class TaskFormatError(TaskError):
    """A task file (or one record of it) is malformed.

    ``path`` is the file, ``line`` the 1-based line of the offending record (``None`` for
    whole-file problems), ``field`` the offending field or column (``None`` when the record
    as a whole is bad) and ``problem`` what is wrong with it. The message reads, e.g.::

        data/x.jsonl line 7, field 'disambiguations[1].answer': must be a non-empty list of strings
    """

    def __init__(self, path: str | Path, problem: str, line: int | None = None, field: str | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.line = line
        self.field = field
        where = self.path if line is None else f"{self.path} line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")
