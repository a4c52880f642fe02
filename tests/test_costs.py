import numpy as np
import pytest

from clarify_env.costs import (
    COST_SPLITS,
    Costs,
    CostSpecError,
    FixedCosts,
    GridCosts,
    RangeCosts,
    format_price,
    make_cost_sampler,
)


def test_fixed_spec_gives_fixed_costs():
    s = make_cost_sampler({"question": 0.2, "word": 0.01})
    assert isinstance(s, FixedCosts)
    assert s.sample(np.random.default_rng(0)) == Costs(0.2, 0.01)


def test_grid_samples_only_grid_points_and_enumerates_them():
    s = make_cost_sampler({"grid": {"question": [0.1, 0.3], "word": 0.01}})
    assert isinstance(s, GridCosts)
    rng = np.random.default_rng(0)
    assert {s.sample(rng) for _ in range(200)} == set(s.points()) == {Costs(0.1, 0.01), Costs(0.3, 0.01)}


def test_uniform_range_never_draws_from_held_out_bands():
    s = make_cost_sampler(
        {"uniform": {"question": {"low": 0, "high": 0.6, "exclude": [[0.1, 0.2]]}, "word": {"low": 0, "high": 0.05}}}
    )
    rng = np.random.default_rng(1)
    draws = [s.sample(rng) for _ in range(3000)]
    qs = np.array([c.question for c in draws])
    assert not np.any((qs > 0.1) & (qs < 0.2))
    assert qs.min() < 0.05 and qs.max() > 0.55


def test_loguniform_with_offset_starts_at_zero():
    s = make_cost_sampler(
        {"loguniform": {"question": {"low": 0, "high": 1, "offset": 0.01}, "word": {"low": 0.001, "high": 0.1}}}
    )
    rng = np.random.default_rng(2)
    qs = np.array([s.sample(rng).question for _ in range(2000)])
    assert qs.min() >= 0 and qs.max() <= 1
    assert np.median(qs) < 0.2  # log-uniform puts most mass at small prices


def test_default_split_holds_out_its_evaluation_prices():
    split = COST_SPLITS["default"]
    assert isinstance(split.train, RangeCosts)
    for c in split.heldout.points():
        assert split.train.held_out(c)
        assert split.train.question.low <= c.question <= split.train.question.high
    rng = np.random.default_rng(3)
    heldout_q = {c.question for c in split.heldout.points()}
    assert not any(split.train.sample(rng).question in heldout_q for _ in range(2000))
    for c in split.extrapolation.points():
        assert c.question > split.train.question.high or c.word > split.train.word.high
    assert make_cost_sampler("default:heldout") is split.heldout
    # one price at a time: five question prices at one word price and vice versa
    points = split.heldout.points()
    assert len({c.question for c in points}) == 5 and len({c.word for c in points}) == 5


def test_points_spec_gives_exactly_those_points():
    s = make_cost_sampler({"points": [[0.1, 0.01], [0.2, 0.02]]})
    assert s.points() == [Costs(0.1, 0.01), Costs(0.2, 0.02)]
    with pytest.raises(CostSpecError, match=r"points\[1\]"):
        make_cost_sampler({"points": [[0.1, 0.01], [0.2]]})


def test_sampling_is_deterministic_given_seed():
    s = make_cost_sampler("default:train")
    a = [s.sample(np.random.default_rng(7)) for _ in range(5)]
    b = [s.sample(np.random.default_rng(7)) for _ in range(5)]
    assert a == b


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"question": -1, "word": 0.1}, "question"),
        ({"grid": {"question": [], "word": [0.1]}}, "at least one"),
        ({"uniform": {"question": {"low": 0.5, "high": 0.1}, "word": {"low": 0, "high": 1}}}, "low <= high"),
        ({"uniform": {"question": {"low": 0, "high": 1, "step": 2}, "word": {"low": 0, "high": 1}}}, "step"),
        ({"loguniform": {"question": {"low": 0, "high": 1}, "word": {"low": 0.1, "high": 1}}}, "offset"),
        ({"gaussian": {"question": 1, "word": 1}}, "gaussian"),
        ("nosuchsplit:train", "nosuchsplit"),
        ("default:test", "test"),
        (
            {"uniform": {"question": {"low": 0, "high": 1, "exclude": [[0, 1]]}, "word": {"low": 0, "high": 1}}},
            "whole range",
        ),
    ],
)
def test_bad_cost_specs_name_the_problem(spec, message):
    with pytest.raises(CostSpecError, match=message):
        make_cost_sampler(spec)


def test_prices_are_described_exactly():
    assert Costs(0.2, 0.01).describe() == (
        "Price of a clarifying question: 0.200. Price of each word of your final response: 0.0100."
    )
    assert format_price(0.12345, 3) == "0.12345"
