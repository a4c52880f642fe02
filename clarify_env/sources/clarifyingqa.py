"""ClarifyingQA tasks: human clarifying questions and clarifications over vague questions.

The CSV has columns ``id, vagueQuestion, clearQuestion, clarifyingQuestion,
clarification, answers`` (answers separated by ';'). Rows sharing an ``id`` form one task
(first-seen order); each row is one interpretation whose facet is the user's
clarification. When two rows of a task have the same clarification, each of them gets
the words its clear question adds, in parentheses, so that facets stay distinct (merging
would lose that the rows have different answers).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from clarify_env.context import render_context
from clarify_env.matching import content_terms
from clarify_env.sources.ambigqa import check_mode, one_line, question_delta
from clarify_env.sources.base import ListSource, split_source
from clarify_env.sources.errors import TaskFormatError
from clarify_env.tasks import Interpretation, Task

COLUMNS = ("id", "vagueQuestion", "clearQuestion", "clarifyingQuestion", "clarification", "answers")

Row = dict[str, str]


def load_clarifyingqa(
    path: str | Path, mode: str = "open", split: str = "all", dev_fraction: float = 0.3, split_seed: int = 0
) -> ListSource:
    """Tasks from a ClarifyingQA CSV file, one per distinct ``id`` (``split``: ``train``, ``dev``
    or ``all``, as for ``load_ambigqa``).

    Interpretations get uniform priors; ``metadata`` holds the human
    ``clarifying_question`` and its ``dimension_words`` (its content terms that the vague
    question lacks). ``mode="open"`` renders the context, ``"closed"`` leaves it ``None``.
    """
    check_mode(mode)
    path = Path(path)
    groups: dict[str, list[Row]] = {}
    for row in _rows(path):
        rows = groups.setdefault(row["id"], [])
        if rows and rows[0]["vagueQuestion"] != row["vagueQuestion"]:
            raise TaskFormatError(
                path,
                f"id {row['id']!r} has another vague question than on line {rows[0]['line']} "
                f"({rows[0]['vagueQuestion']!r}): one id, one question",
                int(row["line"]),
                "id",
            )
        rows.append(row)
    if not groups:
        raise TaskFormatError(path, "holds a header but no rows")
    tasks = []
    for task_id, rows in groups.items():
        try:
            tasks.append(_task(task_id, rows, mode))
        except ValueError as e:  # TaskError, or more meanings than render_context can label
            raise TaskFormatError(path, f"task {task_id!r}: {e}", int(rows[0]["line"])) from None
    return split_source(tasks, path, "clarifyingqa", split, dev_fraction, split_seed)


def _rows(path: Path) -> list[Row]:
    """The file's rows, whitespace-normalised, with every required field non-empty (each with
    its ``line``)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise TaskFormatError(path, f"is not UTF-8 text (byte {e.start})", line) from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows = []
    try:
        if reader.fieldnames is None:
            raise TaskFormatError(path, "is empty (no header row)")
        for column in COLUMNS:
            if column not in reader.fieldnames:
                raise TaskFormatError(
                    path, f"missing column (header has: {', '.join(reader.fieldnames)})", field=column
                )
        for raw in reader:
            rows.append(_row(path, raw, reader.line_num))
    except csv.Error as e:  # a field over the csv module's size limit, a stray quote
        raise TaskFormatError(path, f"is not well-formed CSV ({e})", reader.line_num) from None
    return rows


def _row(path: Path, raw: dict[str, str | None], line: int) -> Row:
    """One record, checked: every column there and non-empty, on one line, with an answer."""
    for column in COLUMNS:
        value = raw.get(column)
        if value is not None and "\n" in value:
            raise TaskFormatError(path, "runs over several lines (an unclosed quote?)", line, column)
    row = {c: one_line(raw.get(c) or "") for c in COLUMNS}
    for column in COLUMNS:
        if not row[column]:
            raise TaskFormatError(path, "is empty", line, column)
    if not _answers(row):
        raise TaskFormatError(path, "holds no answer between the ';' separators", line, "answers")
    row["line"] = str(line)
    return row


def _answers(row: Row) -> tuple[str, ...]:
    return tuple(a for a in (part.strip() for part in row["answers"].split(";")) if a)


def _facets(rows: list[Row]) -> list[str]:
    """Clarifications, with repeated ones told apart by their clear questions."""
    facets = [row["clarification"] for row in rows]
    keys = [facet.lower() for facet in facets]
    query = rows[0]["vagueQuestion"]
    return [
        f"{facet} ({question_delta(query, row['clearQuestion']) or row['clearQuestion']})"
        if keys.count(key) > 1
        else facet
        for facet, key, row in zip(facets, keys, rows)
    ]


def _task(task_id: str, rows: list[Row], mode: str) -> Task:
    query = rows[0]["vagueQuestion"]
    clarifying = rows[0]["clarifyingQuestion"]
    interps = tuple(
        Interpretation(row["clearQuestion"], _answers(row), 1.0, facet) for row, facet in zip(rows, _facets(rows))
    )
    return Task(
        id=task_id,
        query=query,
        interpretations=interps,
        context=render_context(interps) if mode == "open" else None,
        metadata={
            "clarifying_question": clarifying,
            "dimension_words": sorted(content_terms(clarifying) - content_terms(query)),
        },
    )
