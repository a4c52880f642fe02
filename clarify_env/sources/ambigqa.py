"""AmbigQA-style JSON Lines tasks: a vague question and its disambiguations.

One record per line, in either layout::

    {"id"?, "question", "answers"?: [str], "disambiguations": [{"question", "answer": [str]}],
     "clarification"?: ...}
    {"id", "question", "annotations": [{"type": "singleAnswer", "answer": [str]}
                                       | {"type": "multipleQAs", "qaPairs": [{"question", "answer": [str]}]}]}

The official layout uses its first annotation. Zero or one disambiguation gives an
unambiguous task; more give one interpretation each, with uniform priors and a facet
derived from the words the disambiguated question adds to the vague one.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, Sequence

from clarify_env.context import render_context
from clarify_env.matching import STOPWORDS, distinguishing_terms
from clarify_env.sources.base import ListSource, split_source
from clarify_env.sources.errors import TaskFormatError
from clarify_env.tasks import Interpretation, Task
from clarify_env.text import normalize_answer

MAX_FACET_WORDS = 8
MODES = ("open", "closed")


def check_mode(mode: str) -> None:
    """Reject a book mode other than "open" (context shown) or "closed" (no context)."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'open' or 'closed', got {mode!r}")


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


def question_delta(query: str, question: str, also_drop: frozenset[str] = frozenset()) -> str:
    """The words of ``question`` (original casing and order) whose normalised form is not in
    ``query`` nor in ``also_drop``, without stopwords at either end or edge punctuation, cut
    to ``MAX_FACET_WORDS`` words; empty when the question adds nothing."""
    drop = set(normalize_answer(query).split()) | also_drop
    words = [w for w in question.split() if (n := normalize_answer(w)) and n not in drop]
    while words and normalize_answer(words[0]) in STOPWORDS:
        words.pop(0)
    while words and normalize_answer(words[-1]) in STOPWORDS:
        words.pop()
    return " ".join(words[:MAX_FACET_WORDS]).strip(string.punctuation + " ")


def derive_facets(query: str, questions: Sequence[str]) -> list[str]:
    """Short facets for the disambiguated ``questions`` of ``query``.

    Each facet keeps the words its question adds to the query, minus words every question
    shares; a facet that comes out empty or that ``distinguishing_terms`` cannot tell from
    the others falls back to its whole disambiguated question.
    """
    token_sets = [set(normalize_answer(q).split()) for q in questions]
    common = frozenset(set.intersection(*token_sets)) if len(questions) > 1 else frozenset()
    facets = [question_delta(query, q, common) or q for q in questions]
    distinct = distinguishing_terms(facets, exclude=query)
    return [f if terms else q for f, q, terms in zip(facets, questions, distinct)]


def load_ambigqa(
    path: str | Path, mode: str = "open", split: str = "all", dev_fraction: float = 0.3, split_seed: int = 0
) -> ListSource:
    """Tasks from an AmbigQA-style JSON Lines file (see the module docstring).

    ``mode="open"`` renders the interpretations' answers as the assistant-only context;
    ``"closed"`` leaves it ``None``. Ids are the records' ``id`` or ``"{file stem}-{line}"``.
    Blank lines are skipped; malformed records raise ``TaskFormatError``. ``split`` keeps the
    ``train`` or ``dev`` part (``dev_fraction`` of the tasks, chosen by a hash of their ids:
    ``base.split_tasks``) or ``all``.
    """
    check_mode(mode)
    path = Path(path)
    tasks, first_line = [], {}
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise TaskFormatError(
                    path, f"is not UTF-8 text (byte {e.start}: {raw[e.start : e.start + 1]!r})", line_no
                ) from None
            if not line.strip():
                continue
            task = _task(_parse_line(path, line_no, line), path, line_no, mode)
            if task.id in first_line:
                problem = f"duplicate id {task.id!r} (first on line {first_line[task.id]})"
                raise TaskFormatError(path, problem, line_no, "id")
            first_line[task.id] = line_no
            tasks.append(task)
    if not tasks:
        raise TaskFormatError(path, "holds no records (the file is empty)")
    return split_source(tasks, path, "ambigqa", split, dev_fraction, split_seed)


def _parse_line(path: Path, line_no: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise TaskFormatError(path, f"invalid JSON ({e})", line_no) from e
    except RecursionError:
        raise TaskFormatError(path, "is JSON nested too deeply to be a task record", line_no) from None
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise TaskFormatError(
            path, f"holds a lone surrogate escape ({e.object[e.start : e.end]!r}), not text", line_no
        ) from None
    if isinstance(record, list):
        raise TaskFormatError(
            path, "is a JSON array, not one JSON object per line (convert with: jq -c '.[]')", line_no
        )
    if not isinstance(record, dict):
        raise TaskFormatError(path, "must be a JSON object", line_no)
    return record


class _Record:
    """Field access on one record that reports bad fields with file, line and field name."""

    def __init__(self, path: Path, line_no: int) -> None:
        self.path, self.line_no = path, line_no

    def fail(self, field: str, problem: str) -> TaskFormatError:
        return TaskFormatError(self.path, problem, self.line_no, field)

    def text(self, obj: dict[str, Any], key: str, field: str) -> str:
        value = obj.get(key)
        if value is None:
            raise self.fail(field, "is missing")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, "must be a non-empty string")
        return one_line(value)

    def answers(self, obj: dict[str, Any], key: str, field: str) -> tuple[str, ...]:
        value = obj.get(key)
        if value is None:
            raise self.fail(field, "is missing")
        if not (isinstance(value, list) and value and all(isinstance(a, str) and a.strip() for a in value)):
            raise self.fail(field, "must be a non-empty list of strings")
        return tuple(one_line(a) for a in value)

    def objects(self, obj: dict[str, Any], key: str, field: str, required: bool) -> list[dict[str, Any]]:
        value = obj.get(key)
        if value is None and not required:
            return []
        if value is None:
            raise self.fail(field, "is missing")
        if not isinstance(value, list):
            raise self.fail(field, "must be a list of objects")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{field}[{i}]", "must be an object")
        return value


Pairs = list[tuple[str, tuple[str, ...]]]


def _pairs(record: dict[str, Any], rec: _Record) -> tuple[Pairs, tuple[str, ...] | None]:
    """(disambiguated question, answers) pairs and the record's own answers, if any."""
    if "annotations" in record and "disambiguations" not in record:
        return _official_pairs(record, rec)
    qa = rec.objects(record, "disambiguations", "disambiguations", required=False)
    pairs = _qa_pairs(qa, "disambiguations", rec)
    has_answers = record.get("answers") is not None or not pairs
    return pairs, rec.answers(record, "answers", "answers") if has_answers else None


def _official_pairs(record: dict[str, Any], rec: _Record) -> tuple[Pairs, tuple[str, ...] | None]:
    annotations = rec.objects(record, "annotations", "annotations", required=True)
    if not annotations:
        raise rec.fail("annotations", "must hold at least one annotation")
    first = annotations[0]
    if first.get("type") == "singleAnswer":
        return [], rec.answers(first, "answer", "annotations[0].answer")
    if first.get("type") != "multipleQAs":
        raise rec.fail("annotations[0].type", "must be 'singleAnswer' or 'multipleQAs'")
    field = "annotations[0].qaPairs"
    qa = rec.objects(first, "qaPairs", field, required=True)
    if not qa:
        raise rec.fail(field, "must hold at least one question-answer pair")
    return _qa_pairs(qa, field, rec), None


def _qa_pairs(qa: list[dict[str, Any]], field: str, rec: _Record) -> Pairs:
    return [
        (rec.text(d, "question", f"{field}[{i}].question"), rec.answers(d, "answer", f"{field}[{i}].answer"))
        for i, d in enumerate(qa)
    ]


def _task(record: dict[str, Any], path: Path, line_no: int, mode: str) -> Task:
    rec = _Record(path, line_no)
    query = rec.text(record, "question", "question")
    pairs, answers = _pairs(record, rec)
    if len(pairs) > 1:
        facets = derive_facets(query, [q for q, _ in pairs])
        interps = tuple(Interpretation(q, a, 1.0, f) for (q, a), f in zip(pairs, facets))
    else:
        question = pairs[0][0] if pairs else query
        gold = answers if answers is not None else pairs[0][1]
        interps = (Interpretation(question, gold, 1.0, question),)
    metadata: dict[str, Any] = {}
    if record.get("clarification") is not None:
        metadata["clarification"] = record["clarification"]
    task_id = record.get("id")
    try:
        return Task(
            id=str(task_id) if task_id not in (None, "") else f"{path.stem}-{line_no}",
            query=query,
            interpretations=interps,
            context=render_context(interps) if mode == "open" else None,
            metadata=metadata,
        )
    except ValueError as e:  # TaskError, or more meanings than render_context can label
        raise TaskFormatError(path, str(e), line_no) from e


def record_from_hub_row(row: dict[str, Any]) -> dict[str, Any]:
    """One row of the Hugging Face hub's ``sewon/ambig_qa`` (``light`` or ``full``) as a record of the
    official layout this loader reads. The hub stores ``annotations`` column-wise (``{"type": [...],
    "answer": [[...]], "qaPairs": [{"question": [...], "answer": [[...]]}]}``, empty lists where an
    annotation's type has no such key); the record lists one object per annotation."""
    notes = row["annotations"]
    annotations = []
    for i, kind in enumerate(notes["type"]):
        if kind == "singleAnswer":
            annotations.append({"type": kind, "answer": list(notes["answer"][i])})
        else:
            pairs = notes["qaPairs"][i]
            annotations.append(
                {
                    "type": kind,
                    "qaPairs": [{"question": q, "answer": list(a)} for q, a in zip(pairs["question"], pairs["answer"])],
                }
            )
    return {"id": row["id"], "question": row["question"], "annotations": annotations}
