"""Hindsight price relabelling: each grown group scored again at fresh training prices.

An episode's reward is linear in the prices (accuracy − α·questions − β·words − penalty) and
nothing the user says depends on them, so a grown dialogue is also a demonstration at any other
prices: the same turns, the prompt's price lines rewritten, every score shifted by
(α − α')·questions + (β − β')·words. Scoring a (task, prices) group again at R fresh draws and
keeping its best under each shows the improve step R more price trade-offs per execution of a
move, with no further generation: the goal relabelling of hindsight experience replay, applied
to the prices the policy is conditioned on.
"""

from __future__ import annotations

import collections
from dataclasses import replace
from typing import Callable, Mapping, Sequence

import numpy as np

from clarify_env.costs import Costs
from clarify_env.env import render_observation
from clarify_env.scoring import Rules
from clarify_env.tasks import Task
from trainers.config import FilterConfig
from trainers.episodes import Episode, play_order
from trainers.filtering import filter_episodes

Conversation = Callable[[Mapping], list]  # an observation -> the chat the assistant is shown


def repriced(episode: Episode, costs: Costs, chat: list[dict[str, str]], suffix: str) -> Episode:
    """``episode`` as though played at ``costs``: its ``chat`` (the prompt at those prices), every
    score shifted by the price difference, ids suffixed (``suffix``) to stay unique."""
    old = Costs(**episode.costs)
    questions, words = episode.components["questions"], episode.components["words"]
    shift = (old.question - costs.question) * questions + (old.word - costs.word) * words
    components = dict(
        episode.components,
        question_cost=costs.question * questions,
        word_cost=costs.word * words,
        reward=episode.components["reward"] + shift,
    )
    metadata = dict(episode.metadata, relabelled_from=episode.episode_id)
    if isinstance(metadata.get("rule_expected_reward"), (int, float)):
        metadata["rule_expected_reward"] += shift
    return replace(
        episode,
        episode_id=f"{episode.episode_id}/{suffix}",
        group_id=f"{episode.group_id}/{suffix}",
        costs=costs.to_dict(),
        chat=chat,
        reward=episode.reward + shift,
        expected_reward=episode.expected_reward + shift,
        components=components,
        metadata=metadata,
    )


def chat_at(episode: Episode, task: Task, costs: Costs, rules: Rules, conversation: Conversation) -> list[dict]:
    """The chat the assistant would have been shown for ``episode``'s turns at ``costs``: its last
    observation rebuilt as the env renders it, through ``conversation``, then its final message."""
    questions = episode.moves[:-1].count("CLARIFY")
    observation = render_observation(task, costs, rules, episode.messages[:-1], questions)
    return [*conversation(observation), dict(episode.messages[-1])]


def relabel_groups(
    episodes: Sequence[Episode],
    config: FilterConfig,
    draws: int,
    sample_costs: Callable[[np.random.Generator], Costs],
    task_of: Callable[[str], Task],
    rules: Rules,
    conversation: Conversation,
    seed: int,
    step: int = 1,
) -> list[Episode]:
    """The filter's pick of each group of grown ``episodes`` at ``draws`` fresh prices each
    (``sample_costs``), relabelled (``repriced``); ``task_of``: a task by its id; ``step``: the
    improve step, for a rising threshold. Deterministic given ``seed``, in whatever order the
    episodes come (groups are drawn for in play order). An episode whose stored chat is not what
    ``conversation`` renders at its own prices (the prompt changed since it was grown) is a
    ``ValueError`` naming it: relabelling would train on a prompt it never saw."""
    if draws <= 0:
        return []
    groups: dict[str, list[Episode]] = collections.defaultdict(list)
    for e in sorted(episodes, key=play_order):
        groups[e.group_id].append(e)
    rng = np.random.default_rng(seed)
    out: list[Episode] = []
    for members in groups.values():
        tasks = [_task(task_of, e) for e in members]
        for e, task in zip(members, tasks):
            if chat_at(e, task, Costs(**e.costs), rules, conversation) != e.chat:
                raise ValueError(
                    f"episode {e.episode_id}: its chat is not the prompt the assistant config renders at its "
                    "prices (the prompt changed since it was grown): regrow it or set rest.relabel_prices: 0"
                )
        for j in range(1, draws + 1):
            costs = sample_costs(rng)
            moved = [
                repriced(e, costs, chat_at(e, task, costs, rules, conversation), f"r{j}")
                for e, task in zip(members, tasks)
            ]
            out += filter_episodes(moved, config, step)
    return out


def _task(task_of: Callable[[str], Task], episode: Episode) -> Task:
    try:
        return task_of(episode.task_id)
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"episode {episode.episode_id}: task {episode.task_id} is not among the training tasks"
        ) from err
