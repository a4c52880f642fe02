import numpy as np
import pytest

from agents import AlwaysAnswer, AlwaysClarify, AlwaysMulti, OraclePolicy, RandomMixture, make_baseline
from clarify_env import ClarifyEnv, Costs, Move, Rules
from clarify_env.matching import best_match, guarded_naming_reply
from clarify_env.oracle import context_meanings, move_values, oracle_value, task_meanings
from clarify_env.sources import load_clarifyingqa
from helpers import clarifyingqa_file
from trainers.eval_metrics import policy_expectation


def values(task, q, w):
    return move_values(task_meanings(task), Costs(q, w), task.query)


def test_move_values_match_hand_computation(beast_task):
    v = values(beast_task, 0.2, 0.01)
    assert v[Move.ANSWER].expected_reward == pytest.approx(0.7 - 0.02)
    assert v[Move.CLARIFY].expected_reward == pytest.approx(1 - 0.2 - 0.02)
    assert v[Move.MULTI].expected_reward == pytest.approx(1 - 0.08)


@pytest.mark.parametrize("word", [0.0, 0.01, 0.03])
def test_clarify_wins_below_the_question_price_threshold(beast_task, word):
    # CLARIFY beats MULTI iff alpha < 6*beta and beats ANSWER iff alpha < 0.3 (priors .7/.3)
    threshold = min(6 * word, 0.3)
    if threshold > 0:
        assert oracle_value(beast_task, Costs(threshold - 0.01, word)).move is Move.CLARIFY
    assert oracle_value(beast_task, Costs(threshold + 0.01, word)).move is not Move.CLARIFY


def test_multi_wins_when_words_are_cheap_and_answer_when_dear(beast_task):
    # MULTI - ANSWER = 0.3 - 6*beta
    assert oracle_value(beast_task, Costs(0.5, 0.049)).move is Move.MULTI
    assert oracle_value(beast_task, Costs(0.5, 0.051)).move is Move.ANSWER


def test_no_clarify_when_questions_are_not_allowed(beast_task):
    assert Move.CLARIFY not in move_values(task_meanings(beast_task), Costs(0, 0.05), rules=Rules(max_questions=0))


def test_context_meanings_equal_task_meanings_on_synthetic_tasks():
    env = ClarifyEnv(source="synthetic")
    for seed in range(300):
        env.reset(seed=seed)
        t, c = task_meanings(env.task), context_meanings(env.task.context)
        assert [(m.facet, m.answer) for m in t] == [(m.facet, m.answer) for m in c]
        assert np.allclose([m.prior for m in t], [m.prior for m in c])


def played_value(env: ClarifyEnv, task, costs: Costs, message: str) -> float:
    """The reward of opening with ``message`` (a CLARIFY followed by the answer the user's reply
    points at), played in the env against every meaning and weighted by its prior."""
    total = 0.0
    for index, prior in enumerate(task.priors):
        obs, _ = env.reset(seed=0, options={"task": task, "costs": costs, "interpretation": index})
        obs, reward, terminated, truncated, _ = env.step(message)
        if not (terminated or truncated):
            obs, reward, *_ = env.step(AlwaysClarify().act(obs))
        total += prior * reward
    return total


def synthetic_tasks(n: int) -> list:
    rng = np.random.default_rng(0)
    source = ClarifyEnv(source="synthetic").source
    return [source.sample(rng) for _ in range(n)]


def clarifyingqa_tasks() -> list:
    return list(load_clarifyingqa(clarifyingqa_file()))


@pytest.mark.parametrize("tasks", [lambda: synthetic_tasks(300), clarifyingqa_tasks], ids=["synthetic", "clarifyingqa"])
@pytest.mark.parametrize("metric", ["f1", "em"])
def test_the_oracles_move_values_are_what_the_env_scores_when_the_moves_are_played(tasks, metric) -> None:
    rules = Rules(accuracy_metric=metric)
    env = ClarifyEnv(source="synthetic", rules=rules)
    rng = np.random.default_rng(1)
    checked = 0
    for task in tasks():
        costs = Costs(round(float(rng.uniform(0, 0.6)), 3), round(float(rng.uniform(0, 0.06)), 4))
        for move, value in move_values(task_meanings(task), costs, task.query, rules).items():
            assert played_value(env, task, costs, value.message) == pytest.approx(value.expected_reward, abs=1e-12), (
                task.id,
                move,
            )
            checked += 1
    assert checked >= 3 * 200


def test_oracle_policy_realises_the_oracle_value_exactly():
    env = ClarifyEnv(source="synthetic")
    policy = OraclePolicy()
    rng = np.random.default_rng(0)
    for seed in range(300):
        env.reset(seed=seed)
        task = env.task
        costs = Costs(round(float(rng.uniform(0, 0.6)), 3), round(float(rng.uniform(0, 0.06)), 4))
        realised, _ = policy_expectation(env, policy, task, costs)
        assert realised == pytest.approx(oracle_value(task, costs).expected_reward, abs=1e-6), task.id


def test_scripted_user_and_oracle_reach_full_accuracy_on_clarify_moves():
    env = ClarifyEnv(source="synthetic", costs={"question": 0.0, "word": 0.05})
    policy = AlwaysClarify()
    for seed in range(1000):
        obs, _ = env.reset(seed=seed)
        obs, *_ = env.step(policy.act(obs))
        _, _, terminated, _, info = env.step(policy.act(obs))
        assert terminated and info["reward_components"]["accuracy"] == 1.0, env.task.id
    env = ClarifyEnv(source="synthetic", costs={"question": 0.01, "word": 0.05})
    clarified = 0
    for seed in range(1000):
        obs, _ = env.reset(seed=seed)
        first = OraclePolicy().act(obs)
        obs, *rest = env.step(first)
        if first.startswith("CLARIFY"):
            clarified += 1
            _, _, _, _, info = env.step(OraclePolicy().act(obs))
            assert info["reward_components"]["accuracy"] == 1.0
    assert clarified > 300


@pytest.mark.parametrize("q, w", [(0.0, 0.0), (0.1, 0.005), (0.3, 0.02), (0.6, 0.05), (1.0, 0.1)])
def test_oracle_beats_every_fixed_baseline_in_expectation(q, w):
    env = ClarifyEnv(source="synthetic")
    costs = Costs(q, w)
    policies = [AlwaysAnswer(), AlwaysMulti(), AlwaysClarify()]
    means = np.zeros(len(policies) + 1)
    for seed in range(150):
        env.reset(seed=seed)
        task = env.task
        means[0] += policy_expectation(env, OraclePolicy(), task, costs)[0]
        for k, p in enumerate(policies, 1):
            means[k] += policy_expectation(env, p, task, costs)[0]
    assert means[0] >= means[1:].max() - 1e-9


def test_baselines_play_their_move_whatever_the_prices(beast_task):
    env = ClarifyEnv()
    for costs in [Costs(0, 0), Costs(1, 0.1)]:
        obs, _ = env.reset(seed=0, options={"task": beast_task, "costs": costs})
        assert AlwaysAnswer().act(obs) == "ANSWER: Ron Perlman"
        assert AlwaysMulti().act(obs).startswith("MULTI:")
        assert AlwaysClarify().act(obs).startswith("CLARIFY:")


def test_random_mixture_is_seeded_and_respects_weights(beast_task):
    env = ClarifyEnv()
    obs, _ = env.reset(seed=0, options={"task": beast_task})
    p1, p2 = RandomMixture(seed=3), RandomMixture(seed=3)
    assert [p1.act(obs) for _ in range(30)] == [p2.act(obs) for _ in range(30)]
    only = RandomMixture({"MULTI": 1.0, "ANSWER": 0.0}, seed=0)
    assert all(only.act(obs).startswith("MULTI") for _ in range(20))
    with pytest.raises(ValueError, match="weights"):
        RandomMixture({"GUESS": 1.0})
    with pytest.raises(ValueError, match="unknown scripted policy 'always_guess'"):
        make_baseline("always_guess")
    assert isinstance(make_baseline("oracle", Rules(max_questions=0)), OraclePolicy)


@pytest.mark.parametrize(
    "reply, facets, query, expected",
    [
        # the facet's words are the query's: only the whole facet tells the meanings apart
        ("End.", ["Beginning.", "End."], "Where does the cumberland river begin and end?", 1),
        ("Beginning.", ["Beginning.", "End."], "Where does the cumberland river begin and end?", 0),
        ("With parental consent.", ["Without parental consent.", "With parental consent."], "", 1),
        (
            "I mean What episode they were married in.",
            ["When the episode was released", "What episode they were married in"],
            "When do doug and carol get married in er?",
            1,
        ),
        # a facet inside another: the longest one held
        ("The New Series note.", ["The Series note.", "The New Series note."], "", 1),
        ("The Series note.", ["The Series note.", "The New Series note."], "", 0),
        # no facet in full: distinguishing words as before; none, or a tie, is None
        ("The 2012 one, please.", ["1987 series", "2012 series"], "", 1),
        ("Either.", ["1987 series", "2012 series"], "", None),
        ("Beginning or end?", ["Beginning.", "End."], "", None),
    ],
)
def test_best_match_takes_a_facet_held_in_full_before_distinguishing_words(reply, facets, query, expected):
    assert best_match(reply, facets, query) == expected


def test_every_clarifyingqa_facet_points_at_its_own_meaning():
    """The oracle's CLARIFY value, the scripted user and behaviour cloning's answer after a
    clarification read a reply that is the human clarification (the facet) by this matcher."""
    for task in load_clarifyingqa(clarifyingqa_file()):
        facets = [i.facet for i in task.interpretations]
        assert [best_match(f, facets, task.query) for f in facets] == list(range(len(facets))), task.id


def test_the_naming_reply_is_withheld_where_it_would_state_a_gold_answer():
    """One test serves the scripted user (it then says it is not sure) and the oracle (it models that)."""
    assert guarded_naming_reply("Lyrics.", ["Bob Dylan"]) == "Lyrics."
    assert guarded_naming_reply("the 2012 series", ["Ann Lee"]) == "I mean the 2012 series."
    assert guarded_naming_reply("1973", ["1973"]) is None
    assert guarded_naming_reply("The one from nineteen-73", ["Nineteen 73"]) is None
