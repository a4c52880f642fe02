import pytest

from clarify_env.costs import Costs
from clarify_env.reward import (
    best_f1, compute_reward, contains_answer, count_words, exact_match, normalize_answer, token_f1,
)


def test_normalisation_drops_case_punctuation_and_articles():
    assert normalize_answer("The  Beatles!") == "beatles"
    assert normalize_answer("A Tale of Two Cities.") == "tale of two cities"


def test_token_f1_hand_computed():
    # pred tokens: ron, perlman, jr ; gold: ron, perlman -> P=2/3, R=1, F1=0.8
    assert token_f1("Ron Perlman Jr.", "Ron Perlman") == pytest.approx(0.8)
    assert token_f1("Jay Ryan", "Ron Perlman") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("the", "Ron") == 0.0


def test_best_f1_takes_the_best_alias_and_exact_match_is_strict():
    assert best_f1("V. Melkin", ["Varo Melkin", "V. Melkin"]) == 1.0
    assert exact_match("the Varo Melkin", "Varo Melkin") == 1.0
    assert exact_match("Varo", "Varo Melkin") == 0.0


def test_count_words_ignores_bare_punctuation():
    assert count_words("1987 series: Ron Perlman; 2012 series: Jay Ryan") == 8
    assert count_words(" - ; ") == 0


def test_reward_arithmetic_hand_computed():
    c = compute_reward("Ron Perlman Jr.", ["Ron Perlman"], Costs(0.2, 0.01), questions=1, words=3)
    assert c.f1 == pytest.approx(0.8)
    assert c.exact_match == 0.0
    assert c.question_cost == pytest.approx(0.2)
    assert c.word_cost == pytest.approx(0.03)
    assert c.reward == pytest.approx(0.8 - 0.2 - 0.03)


def test_reward_with_em_metric_and_protocol_penalty():
    c = compute_reward("Ron Perlman", ["Ron Perlman"], Costs(0.5, 0.1), 0, 2, protocol_penalty=0.0, metric="em")
    assert c.reward == pytest.approx(1 - 0.2)
    c = compute_reward(None, ["x"], Costs(0.5, 0.1), 2, 0, protocol_penalty=0.1)
    assert c.accuracy == 0.0 and c.reward == pytest.approx(-1.0 - 0.1)


def test_contains_answer_matches_whole_token_runs_only():
    assert contains_answer("It was Varo Melkin, I think", ["Varo Melkin"])
    assert not contains_answer("Varonia Melkins", ["Varo Melkin"])
