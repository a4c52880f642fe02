from types import SimpleNamespace

import numpy as np
import pytest

from trainers.paired import paired_difference


def episodes(rewards, tasks=None):
    tasks = tasks or [f"t{i % 7}" for i in range(len(rewards))]
    return [
        SimpleNamespace(task_id=t, interpretation=i % 3, reward=float(r))
        for i, (t, r) in enumerate(zip(tasks, rewards))
    ]


def test_pairing_sees_a_small_steady_gain_that_two_intervals_hide():
    rng = np.random.default_rng(0)
    theirs = rng.choice([0.0, 1.0], size=100)  # a wide spread across episodes
    mine = theirs + 0.05  # the same episodes, each a little better
    pairs, diff, low, high = paired_difference(episodes(mine), episodes(theirs))
    assert pairs == 100 and diff == pytest.approx(0.05) and low == pytest.approx(0.05) and high == pytest.approx(0.05)
    # shuffled order pairs up all the same: matched by task and meaning, not by position
    order = rng.permutation(100)
    shuffled = [episodes(theirs)[i] for i in order]
    assert paired_difference(episodes(mine), shuffled)[:2] == (100, pytest.approx(0.05))


def test_a_loss_is_below_and_unrelated_draws_are_refused():
    pairs, diff, low, high = paired_difference(episodes([0.0, 0.2, 0.1] * 10), episodes([0.5, 0.6, 0.4] * 10))
    assert pairs == 30 and high < 0 and diff == pytest.approx(-0.4)
    with pytest.raises(ValueError, match="not paired"):
        paired_difference(episodes([1.0] * 5, ["a"] * 5), episodes([1.0] * 5, ["b"] * 5))


def test_a_partial_match_is_refused_not_paired_on_the_overlap():
    """Two evaluations of another seed share some (task, meaning) draws by chance: pairing only
    those would compare a sample neither mean is about, so it is refused like no match."""

    def draws(reward, tasks):
        return [SimpleNamespace(task_id=f"t{i}", interpretation=0, reward=reward) for i in tasks]

    mine, theirs = draws(1.0, range(8)), draws(0.0, range(2, 10))
    with pytest.raises(ValueError, match="6 of 8 and 8 episodes pair up"):
        paired_difference(mine, theirs)
    with pytest.raises(ValueError, match="not paired"):
        paired_difference(mine, mine[:7])  # a shorter evaluation: one episode without its pair


def test_compare_names_the_policies_it_could_not_pair():
    from trainers.paired import unpaired

    reports = [SimpleNamespace(policy=name) for name in ("trained", "forced", "other-seed")]
    rows = [SimpleNamespace(other="forced")]
    assert unpaired(reports, rows) == ["other-seed"]
