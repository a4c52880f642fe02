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
