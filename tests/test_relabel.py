"""Hindsight price relabelling (`trainers.relabel`): a grown group re-scored at fresh prices is what
the env would have scored and what the assistant would have been shown at those prices."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agents.base import Assistant
from agents.baselines import AlwaysAnswer, AlwaysClarify, AlwaysMulti
from agents.generation import Completion
from agents.llm_assistant import LLMAssistant
from agents.scripted_user import ScriptedUser
from clarify_env.costs import Costs, make_cost_sampler
from clarify_env.env import ClarifyEnv
from clarify_env.scoring import Rules
from trainers.config import FilterConfig
from trainers.eval_metrics import task_lookup
from trainers.filtering import episode_score
from trainers.relabel import relabel_groups, repriced
from trainers.rollout import RolloutEngine

SOURCE = {"name": "synthetic", "max_interpretations": 4}
RULES = Rules()
PROMPT = LLMAssistant(None, prompt_style="compact", rules=RULES)  # renders prompts only


class ForcedScripted(Assistant):
    """Plays the scripted message of the move its prefix forces (an exploring start), records
    the compact prompt: what a grow stage of an LLM policy records, without the LLM."""

    forces_prefixes = True
    name = "forced_scripted"
    POLICIES = {"ANSWER:": AlwaysAnswer(), "MULTI:": AlwaysMulti(), "CLARIFY:": AlwaysClarify()}

    def generate_batch(self, observations, seeds=None, prefixes=None):
        prefixes = prefixes or [""] * len(observations)
        texts = [self.POLICIES[p or "CLARIFY:"].act(o) for o, p in zip(observations, prefixes)]
        return [Completion(t, (), (), "stop") for t in texts]

    def act(self, observation):
        return self.POLICIES["CLARIFY:"].act(observation)

    def conversation(self, observation):
        return PROMPT.conversation(observation)


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory):
    engine = RolloutEngine(
        {"source": SOURCE, "costs": "default:train", "rules": RULES},
        ForcedScripted(),
        ScriptedUser(),
        num_envs=8,
        samples_per_group=3,
        seed=3,
        explore_first_move=True,
    )
    return engine.run(60, tmp_path_factory.mktemp("grow") / "grow.jsonl")


def relabel(episodes, draws=3, seed=0, sample=None, config=FilterConfig(score="rule_expected_reward")):
    sample = sample or make_cost_sampler("default:train").sample
    return relabel_groups(episodes, config, draws, sample, task_lookup(SOURCE), RULES, PROMPT.conversation, seed)


def replayed(episode, costs: Costs):
    """The episode's assistant turns played again at ``costs`` in a fresh env: its last info and
    the chat the rollout engine would record."""
    env = ClarifyEnv(source=SOURCE, costs=costs, rules=RULES, user=ScriptedUser())
    task = task_lookup(SOURCE)(episode.task_id)
    obs, _ = env.reset(seed=0, options={"task": task, "costs": costs, "interpretation": episode.interpretation})
    for turn in episode.messages:
        if turn["role"] != "assistant":
            continue
        last_obs = obs
        obs, _, _, _, info = env.step(turn["content"])
    return info, [*PROMPT.conversation(last_obs), dict(episode.messages[-1])]


def test_a_relabelled_episode_is_what_the_env_scores_and_the_assistant_sees_at_its_new_prices(grown) -> None:
    relabelled = relabel(grown)
    assert relabelled and {e.metadata["relabelled_from"] for e in relabelled} <= {e.episode_id for e in grown}
    assert len({e.episode_id for e in relabelled}) == len(relabelled)  # ids stay unique
    for e in relabelled:
        costs = Costs(**e.costs)
        original = next(g for g in grown if g.episode_id == e.metadata["relabelled_from"])
        assert costs != Costs(**original.costs) and e.messages == original.messages
        info, chat = replayed(e, costs)
        assert e.chat == chat
        assert e.chat[0]["content"].startswith(f"question price {costs.question:.3f}\nword price {costs.word:.4f}\n")
        assert e.reward == pytest.approx(info["reward_components"]["reward"])
        assert e.expected_reward == pytest.approx(info["expected_reward"])
        assert e.metadata["rule_expected_reward"] == pytest.approx(info["rule_expected_reward"])
        assert e.components == pytest.approx(info["reward_components"])


def test_each_draw_keeps_the_groups_best_move_at_the_drawn_prices(grown) -> None:
    config = FilterConfig(score="rule_expected_reward")
    groups: dict[str, list] = {}
    for e in grown:
        groups.setdefault(e.group_id, []).append(e)
    relabelled = relabel(grown, draws=4)
    assert len(relabelled) == 4 * len(groups)  # one a draw: best_k 1, no protocol errors from scripted moves
    for e in relabelled:
        siblings = [repriced(g, Costs(**e.costs), [], "x") for g in groups[e.group_id.split("/")[0]]]
        assert episode_score(e, config) == pytest.approx(max(episode_score(s, config) for s in siblings))
    # the prices steer the pick: asking wins where a question is free, listing where words are
    tasks = task_lookup(SOURCE)
    ambiguous = {e.group_id for e in grown if len(tasks(e.task_id).interpretations) > 1}
    for costs, move in ((Costs(0.0, 0.05), "CLARIFY"), (Costs(0.6, 0.0), "MULTI")):
        picks = {e.group_id.split("/")[0]: e.first_move for e in relabel(grown, draws=1, sample=lambda rng, c=costs: c)}
        assert len(ambiguous) >= 10 and sum(picks[g] == move for g in ambiguous) >= 0.9 * len(ambiguous), (move, picks)


def test_relabelling_is_deterministic_given_its_seed(grown) -> None:
    first, again, other = relabel(grown, seed=5), relabel(grown, seed=5), relabel(grown, seed=6)
    assert [e.to_json() for e in first] == [e.to_json() for e in again]
    assert [e.to_json() for e in relabel(grown[::-1], seed=5)] == [e.to_json() for e in first]  # file order aside
    assert [e.costs for e in first] != [e.costs for e in other]
    assert relabel(grown, draws=0) == []


def test_an_episode_grown_under_another_prompt_is_refused_by_name(grown) -> None:
    stale = [replace(grown[0], chat=[{"role": "system", "content": "old prompt"}, *grown[0].chat[1:]]), *grown[1:]]
    with pytest.raises(ValueError, match=f"episode {grown[0].episode_id}: its chat is not the prompt"):
        relabel(stale)
    unknown = [replace(grown[0], task_id="no-such-task"), *grown[1:]]
    with pytest.raises(ValueError, match=f"episode {grown[0].episode_id}: task no-such-task"):
        relabel(unknown)


def test_repriced_shifts_every_score_by_the_price_difference(grown) -> None:
    e = next(g for g in grown if g.moves[0] == "CLARIFY")
    old, new = Costs(**e.costs), Costs(0.5, 0.01)
    out = repriced(e, new, e.chat, "r1")
    shift = (old.question - 0.5) * e.components["questions"] + (old.word - 0.01) * e.components["words"]
    assert out.reward == pytest.approx(e.reward + shift) and out.expected_reward == pytest.approx(
        e.expected_reward + shift
    )
    assert out.components["question_cost"] == pytest.approx(0.5 * e.components["questions"])
    assert (out.episode_id, out.group_id) == (f"{e.episode_id}/r1", f"{e.group_id}/r1")
    assert np.isclose(out.components["reward"], e.components["reward"] + shift)
