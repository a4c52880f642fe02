import pytest

from clarify_env.costs import Costs
from clarify_env.leak_guard import contains_answer
from clarify_env.protocol import Move
from clarify_env.scoring import Rules, best_f1, exact_match, score, token_f1
from clarify_env.text import count_words, normalize_answer


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
    c = score("Ron Perlman Jr.", ["Ron Perlman"], Costs(0.2, 0.01), questions=1, words=3, rules=Rules())
    assert c.f1 == pytest.approx(0.8)
    assert c.exact_match == 0.0
    assert c.question_cost == pytest.approx(0.2)
    assert c.word_cost == pytest.approx(0.03)
    assert c.reward == pytest.approx(0.8 - 0.2 - 0.03)


def test_reward_with_em_metric_and_protocol_penalty():
    c = score("Ron Perlman Jr", ["Ron Perlman"], Costs(0.5, 0.1), 0, 2, Rules(accuracy_metric="em"))
    assert c.accuracy == 0.0 and c.f1 == pytest.approx(0.8) and c.reward == pytest.approx(-0.2)
    c = score(None, ["x"], Costs(0.5, 0.1), 2, 0, Rules(protocol_error_penalty=0.25), protocol_error=True)
    assert c.accuracy == 0.0 and c.protocol_penalty == 0.25 and c.reward == pytest.approx(-1.0 - 0.25)


def test_contains_answer_matches_whole_token_runs_only():
    assert contains_answer("It was Varo Melkin, I think", ["Varo Melkin"])
    assert not contains_answer("Varonia Melkins", ["Varo Melkin"])


def test_the_word_price_can_be_paid_per_token_and_everything_follows(tmp_path, beast_task):
    """The same moves scored in words and in tokens of a named tokenizer: the env's reward, the
    system prompt, and the oracle's values (still what the env scores when they are played)."""
    from agents.tiny_model import train_tokenizer
    from clarify_env import ClarifyEnv
    from clarify_env.oracle import move_values, task_meanings

    tokenizer = train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 20, 300)  # names split up
    tokenizer.save_pretrained(tmp_path / "tok")
    per_token = Rules(word_unit="tokens", word_tokenizer=str(tmp_path / "tok"))
    costs = Costs(0.2, 0.01)
    for rules in (Rules(), per_token):
        env = ClarifyEnv(costs=costs, rules=rules)
        obs, _ = env.reset(seed=0, options={"task": beast_task, "interpretation": 0})
        unit = "token" if rules is per_token else "word"
        assert f"Price of each {unit} of your final response: 0.0100." in obs["system"]
        _, reward, *_, info = env.step("ANSWER: Ron Perlman")
        units = len(tokenizer("Ron Perlman", add_special_tokens=False)["input_ids"]) if rules is per_token else 2
        assert info["reward_components"]["words"] == units and reward == pytest.approx(1 - 0.01 * units)
        values = move_values(task_meanings(beast_task), costs, beast_task.query, rules)
        multi = values[Move.MULTI]
        played = 0.0
        for index, prior in enumerate(beast_task.priors):
            env.reset(seed=0, options={"task": beast_task, "interpretation": index})
            played += prior * env.step(multi.message)[1]
        assert played == pytest.approx(multi.expected_reward, abs=1e-12)
    assert units > 2  # the invented names split into several tokens: the per-token price is dearer here
