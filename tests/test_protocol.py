import re

from hypothesis import given, settings
from hypothesis import strategies as st

from clarify_env.protocol import (
    Action,
    Move,
    MultiItem,
    ProtocolError,
    format_action,
    parse_action,
)


def test_each_tag_parses_to_its_move():
    assert parse_action("CLARIFY: Which year?") == Action(Move.CLARIFY, "Which year?")
    assert parse_action("ANSWER: Ron Perlman") == Action(Move.ANSWER, "Ron Perlman")
    a = parse_action("MULTI: 1987 series: Ron Perlman; 2012 series: Jay Ryan")
    assert a.move is Move.MULTI
    assert a.items == (MultiItem("1987 series", "Ron Perlman"), MultiItem("2012 series", "Jay Ryan"))


def test_parser_tolerates_case_whitespace_markdown_and_dash():
    assert parse_action("  answer :  Ron Perlman \n") == Action(Move.ANSWER, "Ron Perlman")
    assert parse_action("**ANSWER:** Ron Perlman").move is Move.ANSWER
    assert parse_action("Clarify - which one?") == Action(Move.CLARIFY, "which one?")
    assert parse_action("MULTI-ANSWER: a: x; b: y").move is Move.MULTI


def test_multi_accepts_enumerated_lines():
    a = parse_action("MULTI:\na) the film: Dan Orr\nb) the novel: Mia Kell\n- stage: Ole Sand")
    assert [(i.facet, i.answer) for i in a.items] == [
        ("the film", "Dan Orr"),
        ("the novel", "Mia Kell"),
        ("stage", "Ole Sand"),
    ]


def test_multi_items_keep_titles_abbreviations_and_initials():
    a = parse_action("MULTI: Dr. Kulruth: Nave Kriloth; St. Louis; J. R. Tolkien; 2) Ada: No. 5; (C) x: y")
    assert [(i.facet, i.answer) for i in a.items] == [
        ("Dr. Kulruth", "Nave Kriloth"),
        ("", "St. Louis"),
        ("", "J. R. Tolkien"),
        ("Ada", "No. 5"),
        ("x", "y"),
    ]


def test_multi_answer_keeps_colons_without_space():
    a = parse_action("MULTI: morning: 10:30; evening: 18:45")
    assert [(i.facet, i.answer) for i in a.items] == [("morning", "10:30"), ("evening", "18:45")]


def test_untagged_empty_and_contentless_messages_are_protocol_errors():
    for bad in ["", "   ", "Ron Perlman", "ANSWER:", "CLARIFY:   ", "MULTI: ;;", "I think ANSWER: x"]:
        result = parse_action(bad)
        assert isinstance(result, ProtocolError), bad
        assert result.reason


def test_non_string_message_is_protocol_error_not_exception():
    assert isinstance(parse_action(None), ProtocolError)
    assert isinstance(parse_action(42), ProtocolError)


_text = (
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=";\n\r"), min_size=1)
    .map(str.strip)
    .filter(
        lambda s: (
            s
            and not re.search(r":\s", s)
            and not s.endswith(":")
            and not s.startswith(("-", "*", "•", "("))
            and s[0].isalnum()
        )
    )
)


@given(st.sampled_from([Move.ANSWER, Move.CLARIFY]), _text)
def test_format_then_parse_round_trips_single_moves(move, text):
    action = Action(move, text)
    assert parse_action(format_action(action)) == action


@given(st.lists(st.tuples(_text, _text), min_size=1, max_size=4))
def test_format_then_parse_round_trips_multi_items(pairs):
    pairs = [(f, a) for f, a in pairs if not (len(f) <= 2 and f[-1] in ").")]
    if not pairs:
        return
    items = tuple(MultiItem(f, a) for f, a in pairs)
    parsed = parse_action(format_action(Action(Move.MULTI, "", items)))
    assert parsed.items == items


@settings(max_examples=500)
@given(st.text())
def test_parser_never_raises_on_any_text(text):
    result = parse_action(text)
    assert isinstance(result, (Action, ProtocolError))
    if isinstance(result, Action):
        assert result.text
        assert result.move is not Move.MULTI or result.items
