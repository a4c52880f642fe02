"""Task sources: synthetic generator invariants, file loaders, and make_source."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from clarify_env.context import parse_context, percent_shares
from clarify_env.matching import content_terms, distinguishing_terms
from clarify_env.sources import (
    ListSource,
    SyntheticSource,
    TaskFormatError,
    TaskSource,
    load_ambigqa,
    load_clarifyingqa,
    make_source,
)
from clarify_env.sources.synthetic import KINDS
from clarify_env.tasks import Task
from clarify_env.text import answer_tokens
from helpers import clarifyingqa_file


def sample_many(source: SyntheticSource, n: int, seed: int = 0) -> list[Task]:
    rng = np.random.default_rng(seed)
    return [source.sample(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def synthetic_tasks() -> list[Task]:
    return sample_many(SyntheticSource(), 2000)


def gold_tokens(task: Task) -> list[set[str]]:
    return [{tok for a in i.answers for tok in answer_tokens(a)} for i in task.interpretations]


# -- synthetic: determinism -------------------------------------------------------------


def test_synthetic_same_generator_state_gives_same_tasks():
    source = SyntheticSource()
    assert sample_many(source, 50, seed=7) == sample_many(source, 50, seed=7)
    assert sample_many(source, 50, seed=7) != sample_many(source, 50, seed=8)


def test_synthetic_task_is_rebuilt_from_its_id(synthetic_tasks):
    source = SyntheticSource()
    for task in synthetic_tasks[:100]:
        assert source.from_id(task.id) == task
        assert source.task(int(task.id.removeprefix("syn-"))) == task


def test_synthetic_from_id_rejects_foreign_ids():
    for bad in ("abc", "syn-", "syn-x1", "ambigqa-3"):
        with pytest.raises(ValueError, match="not a synthetic task id"):
            SyntheticSource().from_id(bad)


def test_synthetic_seed_offset_gives_another_task_stream():
    plain, shifted = sample_many(SyntheticSource(), 20), sample_many(SyntheticSource(seed_offset=1), 20)
    assert [int(t.id[4:]) + 1 for t in plain] == [int(t.id[4:]) for t in shifted]


def test_synthetic_ids_are_unique(synthetic_tasks):
    assert len({t.id for t in synthetic_tasks}) == len(synthetic_tasks)


# -- synthetic: invariants over many tasks ------------------------------------------------


def test_synthetic_priors_are_integer_percentages_with_unique_mode(synthetic_tasks):
    tops = []
    for task in synthetic_tasks:
        priors = [i.prior for i in task.interpretations]
        assert all(p == int(p) and p >= 5 for p in priors)
        assert sum(priors) == 100
        ranked = sorted(priors, reverse=True)
        assert len(ranked) == 1 or ranked[0] > ranked[1]
        if task.is_ambiguous:
            tops.append(ranked[0])
    assert min(tops) <= 40 and max(tops) >= 85, "peakedness should range from near-uniform to ~90%"


def test_synthetic_ambiguous_fraction_and_interpretation_counts(synthetic_tasks):
    counts = Counter(len(t.interpretations) for t in synthetic_tasks)
    assert set(counts) == {1, 2, 3, 4}
    assert abs(1 - counts[1] / len(synthetic_tasks) - 0.8) < 0.04
    for fraction in (0.0, 1.0):
        tasks = sample_many(SyntheticSource(ambiguous_fraction=fraction), 200)
        assert all(t.is_ambiguous == bool(fraction) for t in tasks)
    tasks = sample_many(SyntheticSource(ambiguous_fraction=1.0, min_interpretations=5, max_interpretations=6), 200)
    assert {len(t.interpretations) for t in tasks} == {5, 6}


def test_synthetic_facets_are_short_and_distinguishable(synthetic_tasks):
    for task in synthetic_tasks:
        facets = [i.facet for i in task.interpretations]
        assert all(1 <= len(f.split()) <= 3 for f in facets)
        assert all(distinguishing_terms(facets)), facets
        if task.is_ambiguous:
            assert all(distinguishing_terms(facets, exclude=task.query)), (task.query, facets)


def test_synthetic_facets_never_contain_gold_tokens(synthetic_tasks):
    for task in synthetic_tasks:
        golds = set().union(*gold_tokens(task))
        for interp in task.interpretations:
            assert not set(answer_tokens(interp.facet)) & golds, (interp.facet, golds)


def test_synthetic_answers_of_different_interpretations_share_no_tokens(synthetic_tasks):
    for task in synthetic_tasks:
        tokens = gold_tokens(task)
        for i in range(len(tokens)):
            for j in range(i + 1, len(tokens)):
                assert not tokens[i] & tokens[j], task


def test_synthetic_ambiguous_query_names_no_facet_and_leaks_no_answer(synthetic_tasks):
    for task in synthetic_tasks:
        query_terms = content_terms(task.query)
        assert not query_terms & set().union(*gold_tokens(task)), task
        if task.is_ambiguous:
            for terms in distinguishing_terms([i.facet for i in task.interpretations]):
                assert not terms & query_terms, task


def test_synthetic_unambiguous_query_is_its_disambiguated_question(synthetic_tasks):
    single = [t for t in synthetic_tasks if not t.is_ambiguous]
    assert single
    for task in single:
        (interp,) = task.interpretations
        assert task.query == interp.question
        assert content_terms(interp.facet) <= content_terms(task.query)
        assert [e.share for e in parse_context(task.context)] == [1.0]


def test_synthetic_context_round_trips_to_facets_shares_and_answers(synthetic_tasks):
    with_notes = 0
    for task in synthetic_tasks:
        entries = parse_context(task.context)
        interps = task.interpretations
        assert [e.facet for e in entries] == [i.facet for i in interps]
        assert [e.answer for e in entries] == [i.answer for i in interps]
        assert [round(e.share * 100) for e in entries] == percent_shares([i.prior for i in interps])
        extra_lines = len(task.context.splitlines()) - 1 - len(interps)
        assert 0 <= extra_lines <= 2
        with_notes += extra_lines > 0
    assert 0 < with_notes < len(synthetic_tasks)


def test_synthetic_answers_vary_in_length_and_have_aliases(synthetic_tasks):
    interps = [i for t in synthetic_tasks for i in t.interpretations]
    assert {len(i.answer.split()) for i in interps} == {1, 2, 3}
    assert any(len(i.answers) > 1 for i in interps)
    assert any("," in i.answer and i.answer.replace(",", "") in i.answers for i in interps)


def test_synthetic_every_kind_appears_with_its_dimension_and_metadata(synthetic_tasks):
    seen = Counter(t.metadata["kind"] for t in synthetic_tasks)
    assert set(seen) == set(KINDS)
    for task in synthetic_tasks:
        kind = KINDS[task.metadata["kind"]]
        assert task.dimension == kind.dimension
        assert task.metadata["dimension_words"] == list(kind.dimension_words)


def test_synthetic_kinds_restrict_the_generated_kinds():
    tasks = sample_many(SyntheticSource(kinds=["sport", "place"]), 200)
    assert {t.metadata["kind"] for t in tasks} == {"sport", "place"}


def test_synthetic_tasks_survive_dict_round_trip(synthetic_tasks):
    for task in synthetic_tasks[:50]:
        assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"ambiguous_fraction": 1.5}, "ambiguous_fraction"),
        ({"min_interpretations": 1}, "min_interpretations"),
        ({"min_interpretations": 4, "max_interpretations": 3}, "max_interpretations"),
        ({"max_interpretations": 9}, "max_interpretations"),
        ({"kinds": ["weather"]}, "weather"),
        ({"max_notes": -1}, "max_notes"),
    ],
)
def test_synthetic_rejects_bad_settings(kwargs, key):
    with pytest.raises(ValueError, match=key):
        SyntheticSource(**kwargs)


# -- AmbigQA ------------------------------------------------------------------------------


def write_lines(path: Path, records: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


SIMPLE = [
    {
        "id": "beast",
        "question": "Who played the Beast in the TV series?",
        "answers": ["Ron Perlman"],
        "disambiguations": [
            {"question": "Who played the Beast in the 1987 TV series?", "answer": ["Ron Perlman"]},
            {"question": "Who played the Beast in the 2012 TV series?", "answer": ["Jay Ryan", "Ryan"]},
        ],
        "clarification": "Which series?",
    },
    "",
    {"question": "What is the capital of France?", "answers": ["Paris"]},
    {
        "question": "Who wrote Dune?",
        "disambiguations": [{"question": "Who wrote the novel Dune?", "answer": ["Frank Herbert"]}],
    },
]

OFFICIAL = [
    {
        "id": "single",
        "question": "How tall is Everest?",
        "annotations": [{"type": "singleAnswer", "answer": ["8,849 m"]}],
    },
    {
        "id": "multi",
        "question": "When did the Simpsons first air?",
        "annotations": [
            {
                "type": "multipleQAs",
                "qaPairs": [
                    {"question": "When did the Simpsons first air as an animated short?", "answer": ["April 19, 1987"]},
                    {
                        "question": "When did the Simpsons first air as a half-hour show?",
                        "answer": ["December 17, 1989"],
                    },
                ],
            },
            {"type": "singleAnswer", "answer": ["ignored"]},
        ],
    },
]


def test_ambigqa_simple_layout_open_book(tmp_path):
    source = load_ambigqa(write_lines(tmp_path / "dev.jsonl", SIMPLE))
    assert isinstance(source, ListSource) and source.name == "ambigqa"
    assert [t.id for t in source] == ["beast", "dev-3", "dev-4"]
    beast = source.get("beast")
    assert [i.facet for i in beast.interpretations] == ["1987", "2012"]
    assert beast.interpretations[1].answers == ("Jay Ryan", "Ryan")
    assert beast.priors == (0.5, 0.5)
    assert beast.metadata == {"clarification": "Which series?"}
    assert [(e.facet, e.share, e.answer) for e in parse_context(beast.context)] == [
        ("1987", 0.5, "Ron Perlman"),
        ("2012", 0.5, "Jay Ryan"),
    ]
    capital = source.get("dev-3")
    assert not capital.is_ambiguous and capital.interpretations[0].answers == ("Paris",)
    dune = source.get("dev-4")
    assert not dune.is_ambiguous
    assert dune.interpretations[0].question == "Who wrote the novel Dune?"
    assert dune.interpretations[0].answers == ("Frank Herbert",)


def test_ambigqa_closed_book_has_no_context(tmp_path):
    source = load_ambigqa(write_lines(tmp_path / "dev.jsonl", SIMPLE), mode="closed")
    assert all(t.context is None for t in source)


def test_ambigqa_official_layout_uses_first_annotation(tmp_path):
    for mode in ("open", "closed"):
        source = load_ambigqa(write_lines(tmp_path / "light.jsonl", OFFICIAL), mode=mode)
        single, multi = source.get("single"), source.get("multi")
        assert single.interpretations[0].answers == ("8,849 m",)
        assert [i.answers for i in multi.interpretations] == [("April 19, 1987",), ("December 17, 1989",)]
        assert [i.facet for i in multi.interpretations] == ["animated short", "half-hour"]
        assert (multi.context is None) == (mode == "closed")


def test_ambigqa_facets_are_short_distinguishable_or_whole_questions(tmp_path):
    long_tail = " ".join(f"word{i}" for i in range(12))
    record = {
        "question": "Who won the cup?",
        "disambiguations": [
            {"question": f"Who won the cup in {long_tail}?", "answer": ["A"]},
            {"question": "Who won the cup in the end?", "answer": ["B"]},
            {"question": "Who won the cup in the end?!", "answer": ["C"]},
        ],
    }
    task = load_ambigqa(write_lines(tmp_path / "x.jsonl", [record]))[0]
    facets = [i.facet for i in task.interpretations]
    assert facets[0] == " ".join(f"word{i}" for i in range(8))
    assert facets[1:] == ["Who won the cup in the end?", "Who won the cup in the end?!"]


@pytest.mark.parametrize(
    "bad_line, field, problem",
    [
        ('{"question": "Q?", "answers": ["a"]', None, "invalid JSON"),
        ({"answers": ["a"]}, "question", "is missing"),
        ({"question": "Q?"}, "answers", "is missing"),
        ({"question": "Q?", "answers": "a"}, "answers", "must be a non-empty list of strings"),
        (
            {
                "question": "Q?",
                "disambiguations": [{"question": "Q1?", "answer": ["a"]}, {"question": "Q2?", "answer": "b"}],
            },
            "disambiguations[1].answer",
            "must be a non-empty list of strings",
        ),
        (
            {"question": "Q?", "disambiguations": [{"question": "Q1?", "answer": ["a"]}, {"answer": ["b"]}]},
            "disambiguations[1].question",
            "is missing",
        ),
        ({"question": "Q?", "disambiguations": "nope", "answers": ["a"]}, "disambiguations", "must be a list"),
        ({"question": "Q?", "annotations": [{"type": "weird"}]}, "annotations[0].type", "must be"),
        (
            {
                "question": "Q?",
                "annotations": [{"type": "multipleQAs", "qaPairs": [{"question": "Q1?", "answer": []}]}],
            },
            "annotations[0].qaPairs[0].answer",
            "must be a non-empty list of strings",
        ),
        ({"id": "dup", "question": "Q?", "answers": ["a"]}, "id", "duplicate id 'dup' (first on line 1)"),
        ("[1, 2]", None, "JSON array"),
    ],
)
def test_ambigqa_malformed_record_names_file_line_and_field(tmp_path, bad_line, field, problem):
    good = {"id": "dup", "question": "Who?", "answers": ["x"]}
    path = write_lines(tmp_path / "bad.jsonl", [good, "", bad_line])
    with pytest.raises(TaskFormatError) as info:
        load_ambigqa(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert str(err).startswith(f"{path} line 3" + (f", field '{field}': " if field else ": "))
    assert problem in str(err)


def test_ambigqa_empty_file_is_a_clear_error(tmp_path):
    for text in ("", "\n  \n"):
        path = tmp_path / "empty.jsonl"
        path.write_text(text)
        with pytest.raises(TaskFormatError, match="empty") as info:
            load_ambigqa(path)
        assert info.value.path == str(path) and info.value.line is None


def test_loaders_reject_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        load_ambigqa(write_lines(tmp_path / "dev.jsonl", SIMPLE), mode="half")
    with pytest.raises(ValueError, match="mode"):
        load_clarifyingqa(tmp_path / "whatever.csv", mode="book")


# -- ClarifyingQA -------------------------------------------------------------------------

HEADER = ["id", "vagueQuestion", "clearQuestion", "clarifyingQuestion", "clarification", "answers"]
ROWS = [
    [
        "1",
        "Who starred in the play?",
        "Who starred in the play as Corie?",
        "Which character of the play?",
        " Corie. ",
        "Elizabeth Ashley",
    ],
    ["2", "When did it air?", "When did it air in Japan?", "Where?", "Japan", "1992 ; 1993;"],
    [
        "1",
        "Who starred in the play?",
        "Who starred in the play as Victor?",
        "Which character of the play?",
        "Victor.",
        "Kurt Kasznar",
    ],
    ["3", "Who was blamed?", "What country got blamed?", "Officially or popularly?", "Officially.", "Spain"],
    [
        "3",
        "Who was blamed?",
        "What did the court of inquiry blame?",
        "Officially or popularly?",
        "officially.",
        "a mine",
    ],
]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_clarifyingqa_groups_rows_by_id_in_first_seen_order(tmp_path):
    source = load_clarifyingqa(write_csv(tmp_path / "c.csv", HEADER, ROWS))
    assert source.name == "clarifyingqa"
    assert [t.id for t in source] == ["1", "2", "3"]
    play = source.get("1")
    assert play.query == "Who starred in the play?"
    assert [i.question for i in play.interpretations] == [
        "Who starred in the play as Corie?",
        "Who starred in the play as Victor?",
    ]
    assert [i.facet for i in play.interpretations] == ["Corie.", "Victor."]
    assert play.priors == (0.5, 0.5) and play.dimension is None
    assert play.metadata == {"clarifying_question": "Which character of the play?", "dimension_words": ["character"]}
    assert [e.answer for e in parse_context(play.context)] == ["Elizabeth Ashley", "Kurt Kasznar"]
    assert source.get("2").interpretations[0].answers == ("1992", "1993")


def test_clarifyingqa_repeated_clarifications_get_distinct_facets(tmp_path):
    blamed = load_clarifyingqa(write_csv(tmp_path / "c.csv", HEADER, ROWS)).get("3")
    assert [i.facet for i in blamed.interpretations] == [
        "Officially. (country got)",
        "officially. (court of inquiry blame)",
    ]


def test_clarifyingqa_closed_book_has_no_context(tmp_path):
    source = load_clarifyingqa(write_csv(tmp_path / "c.csv", HEADER, ROWS), mode="closed")
    assert all(t.context is None for t in source)


def test_clarifyingqa_missing_column_names_file_and_column(tmp_path):
    path = write_csv(tmp_path / "c.csv", HEADER[:-1], [r[:-1] for r in ROWS])
    with pytest.raises(TaskFormatError, match="missing column") as info:
        load_clarifyingqa(path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), None, "answers")
    assert str(path) in str(info.value)


def test_clarifyingqa_empty_field_names_file_line_and_column(tmp_path):
    rows = [list(r) for r in ROWS]
    rows[2][3] = "  "
    path = write_csv(tmp_path / "c.csv", HEADER, rows)
    with pytest.raises(TaskFormatError) as info:
        load_clarifyingqa(path)
    assert (info.value.line, info.value.field) == (4, "clarifyingQuestion")
    assert str(info.value) == f"{path} line 4, field 'clarifyingQuestion': is empty"


def test_clarifyingqa_answers_of_only_separators_are_an_error(tmp_path):
    rows = [list(r) for r in ROWS]
    rows[0][5] = " ; ;"
    with pytest.raises(TaskFormatError, match="line 2, field 'answers'"):
        load_clarifyingqa(write_csv(tmp_path / "c.csv", HEADER, rows))


def test_clarifyingqa_empty_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TaskFormatError, match="empty"):
        load_clarifyingqa(empty)
    with pytest.raises(TaskFormatError, match="no rows"):
        load_clarifyingqa(write_csv(tmp_path / "header.csv", HEADER, []))


def test_clarifyingqa_real_file_loads_one_task_per_id():
    path = clarifyingqa_file()
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    source = load_clarifyingqa(path)
    assert len(source) == len({r["id"] for r in rows})
    assert sum(len(t.interpretations) for t in source) == len(rows)
    for task in source:
        facets = [i.facet.lower() for i in task.interpretations]
        assert len(set(facets)) == len(facets)
        assert [e.answer for e in parse_context(task.context)] == [i.answer for i in task.interpretations]


# -- make_source --------------------------------------------------------------------------


def test_make_source_builds_each_spec(tmp_path):
    synthetic = SyntheticSource()
    assert make_source(synthetic) is synthetic
    assert isinstance(make_source("synthetic"), SyntheticSource)
    custom = make_source({"name": "synthetic", "ambiguous_fraction": 0.5, "kinds": ["year"]})
    assert isinstance(custom, TaskSource) and custom.ambiguous_fraction == 0.5 and custom.kinds == ("year",)
    jsonl = write_lines(tmp_path / "dev.jsonl", SIMPLE)
    ambig = make_source({"name": "ambigqa", "path": str(jsonl), "mode": "closed"})
    assert len(ambig) == 3 and ambig[0].context is None
    cqa = make_source({"name": "clarifyingqa", "path": write_csv(tmp_path / "c.csv", HEADER, ROWS)})
    assert len(cqa) == 3 and cqa[0].context is not None


@pytest.mark.parametrize(
    "spec, key",
    [
        ("nonsense", "nonsense"),
        ({"kinds": ["year"]}, "None"),
        ({"name": "synthetic", "ambiguity": 0.5}, "ambiguity"),
        ({"name": "ambigqa", "mode": "open"}, "path"),
        ({"name": "clarifyingqa", "path": "x.csv", "shuffle": True}, "shuffle"),
    ],
)
def test_make_source_rejects_unknown_names_and_arguments(spec, key):
    with pytest.raises(ValueError, match=key):
        make_source(spec)


def test_make_source_rejects_other_types():
    with pytest.raises(TypeError):
        make_source(42)
