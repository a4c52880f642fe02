import pytest

from trainers.config import FilterConfig
from trainers.episodes import Episode
from trainers.filtering import filter_episodes, threshold_at


def episode(group, k, expected, reward=None, outcome="answered"):
    return Episode(
        episode_id=f"{group}-s{k}",
        group_id=group,
        sample_index=k,
        task_id="t",
        interpretation=0,
        costs={"question": 0.1, "word": 0.01},
        messages=[],
        chat=[],
        moves=["ANSWER"],
        reward=expected if reward is None else reward,
        expected_reward=expected,
        components={},
        outcome=outcome,
        policy="p",
    )


EPISODES = [
    episode("g0", 0, 0.5),
    episode("g0", 1, 0.9),
    episode("g0", 2, 0.9),
    episode("g0", 3, 0.1),
    episode("g1", 0, 0.3, outcome="protocol_error"),
    episode("g1", 1, 0.2),
]


def ids(kept):
    return [e.episode_id for e in kept]


def test_best_of_group_keeps_one_per_group_ties_to_the_first_sample():
    assert ids(filter_episodes(EPISODES, FilterConfig(best_k=1))) == ["g0-s1", "g1-s1"]


def test_best_k_and_keep_all():
    assert ids(filter_episodes(EPISODES, FilterConfig(best_k=2))) == ["g0-s1", "g0-s2", "g1-s1"]
    assert len(filter_episodes(EPISODES, FilterConfig(best_k=0))) == 5  # the protocol error is dropped


def test_threshold_rises_with_each_improve_step():
    cfg = FilterConfig(best_k=0, threshold=0.4, threshold_step=0.2)
    assert threshold_at(cfg, 1) == 0.4 and threshold_at(cfg, 3) == pytest.approx(0.8)
    assert ids(filter_episodes(EPISODES, cfg, step=1)) == ["g0-s0", "g0-s1", "g0-s2"]
    assert ids(filter_episodes(EPISODES, cfg, step=2)) == ["g0-s1", "g0-s2"]


def test_the_score_is_the_expected_reward_unless_the_realised_one_is_asked_for():
    lucky = [episode("g", 0, 0.6, reward=1.0), episode("g", 1, 0.8, reward=0.8)]
    assert ids(filter_episodes(lucky, FilterConfig(score="reward"))) == ["g-s0"]
    assert ids(filter_episodes(lucky, FilterConfig(score="expected_reward"))) == ["g-s1"]


def test_rule_expected_reward_scores_from_the_episodes_record():
    guess, clarify = episode("g", 0, 1.0), episode("g", 1, 0.8)  # an LLM user's lucky guess, realised
    guess.metadata["rule_expected_reward"], clarify.metadata["rule_expected_reward"] = 0.3, 0.8
    assert ids(filter_episodes([guess, clarify], FilterConfig(score="expected_reward"))) == ["g-s0"]
    assert ids(filter_episodes([guess, clarify], FilterConfig(score="rule_expected_reward"))) == ["g-s1"]
    with pytest.raises(ValueError, match="g-s0 has no metadata.rule_expected_reward"):
        filter_episodes([episode("g", 0, 1.0)], FilterConfig(score="rule_expected_reward"))
