"""ReST's filter: which grown episodes the improve step learns from."""

from __future__ import annotations

import collections
from typing import Sequence

from trainers.config import FilterConfig
from trainers.episodes import Episode


def episode_score(episode: Episode, config: FilterConfig) -> float:
    """The episode's score under ``config.score`` (``FilterConfig``); an episode recorded without
    a rule-read expectation (grown by an older version) is a ``ValueError`` naming it."""
    if config.score == "rule_expected_reward":
        value = episode.metadata.get("rule_expected_reward")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(
                f"episode {episode.episode_id} has no metadata.rule_expected_reward (grown before it was "
                "recorded): regrow it (delete the iteration's folder) or set rest.filter.score: expected_reward"
            )
        return float(value)
    return episode.expected_reward if config.score == "expected_reward" else episode.reward


def threshold_at(config: FilterConfig, step: int) -> float | None:
    """The reward threshold of improve step ``step`` (1-based): rises by ``threshold_step``."""
    if config.threshold is None:
        return None
    return config.threshold + config.threshold_step * (step - 1)


def filter_episodes(episodes: Sequence[Episode], config: FilterConfig, step: int = 1) -> list[Episode]:
    """Keep the episodes that pass every configured test, in their original order.

    Tests, each optional: no protocol error; score >= the step's threshold; among the
    ``best_k`` of its (task, prices) group (ties broken by sample index, so the result is
    deterministic).
    """
    threshold = threshold_at(config, step)
    groups: dict[str, list[Episode]] = collections.defaultdict(list)
    for e in episodes:
        groups[e.group_id].append(e)
    kept_ids = set()
    for members in groups.values():
        scores = {e.episode_id: episode_score(e, config) for e in members}
        passing = [
            e
            for e in members
            if not (config.drop_protocol_errors and e.outcome == "protocol_error")
            and (threshold is None or scores[e.episode_id] >= threshold)
        ]
        passing.sort(key=lambda e: (-scores[e.episode_id], e.sample_index))
        if config.best_k > 0:
            passing = passing[: config.best_k]
        kept_ids.update(e.episode_id for e in passing)
    return [e for e in episodes if e.episode_id in kept_ids]
