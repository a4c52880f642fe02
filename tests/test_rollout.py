"""The batched rollout engine, the LLM assistant and the LLM user."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pytest

from agents.base import Agent
from agents.baselines import OraclePolicy
from agents.generation import Completion, GenerationBackend, SamplingParams
from agents.hf_backend import TransformersBackend
from agents.llm_assistant import LLMAssistant, compact_system, few_shot_demos, with_reply_lookup
from agents.llm_user import LLMUser
from agents.scripted_user import UNHELPFUL_REPLY, ScriptedUser
from agents.tiny_model import build_tiny_model
from clarify_env.context import render_context
from clarify_env.costs import Costs
from clarify_env.dialogue import UserRequest
from clarify_env.env import ClarifyEnv
from clarify_env.protocol import Move, answer, clarify, multi, parse_action
from clarify_env.tasks import Interpretation
from helpers import defaults_config
from trainers.cli import main
from trainers.episodes import read_episodes
from trainers.models import tiny_corpus
from trainers.rollout import RolloutEngine, move_name

ENV = {"source": "synthetic", "costs": "default:train"}
GREEDY = SamplingParams(temperature=0, max_new_tokens=8)


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory: pytest.TempPathFactory) -> TransformersBackend:
    path = build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "model",
        tiny_corpus(100),
        vocab_size=512,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        initializer_range=0.1,
    )
    return TransformersBackend(path, device="cpu", batch_size=64)


class CountingBackend(GenerationBackend):
    """Wraps a backend and records the size of each ``generate`` call."""

    def __init__(self, inner: GenerationBackend) -> None:
        self.inner, self.tokenizer, self.batch_sizes = inner, inner.tokenizer, []

    def generate(self, conversations, sampling, adapter=None, seeds=None, prefixes=None):
        self.batch_sizes.append(len(conversations))
        return self.inner.generate(conversations, sampling, adapter, seeds=seeds, prefixes=prefixes)

    def add_adapter(self, name, path):
        self.inner.add_adapter(name, path)


class FixedBackend(GenerationBackend):
    """Test double for a model: every completion is ``reply(conversation)``."""

    tokenizer = None

    def __init__(self, reply) -> None:
        self.reply = reply

    def generate(self, conversations, sampling, adapter=None, seeds=None):
        return [[Completion(self.reply(c), (1, 2), (3,), "stop")] for c in conversations]

    def add_adapter(self, name, path):
        raise NotImplementedError


def play_step_by_step(engine: RolloutEngine, assistant: Agent, user: Agent, index: int) -> dict:
    """Episode ``index`` played alone through ``env.step``, with the engine's task, prices and seed."""
    env = ClarifyEnv(**ENV, user=user)
    task, costs = engine.group(index // engine.samples_per_group)
    obs, _ = env.reset(seed=engine.episode_seed(index), options={"task": task, "costs": costs})
    moves, total, done = [], 0.0, False
    while not done:
        message = assistant.act(obs)
        moves.append(move_name(message))
        obs, reward, terminated, truncated, info = env.step(message)
        total += reward
        done = terminated or truncated
    return {
        "messages": env.messages,
        "moves": moves,
        "reward": total,
        "expected_reward": info["expected_reward"],
        "rule_expected_reward": info["rule_expected_reward"],
        "outcome": info["outcome"],
        "interpretation": env.interpretation_index,
        "task_id": task.id,
    }


def assert_same_as_step_by_step(engine: RolloutEngine, episodes, assistant: Agent, user: Agent) -> None:
    for i, e in enumerate(episodes):
        ref = play_step_by_step(engine, assistant, user, i)
        got = {
            "messages": e.messages,
            "moves": e.moves,
            "reward": e.reward,
            "expected_reward": e.expected_reward,
            "rule_expected_reward": e.metadata["rule_expected_reward"],
            "outcome": e.outcome,
            "interpretation": e.interpretation,
            "task_id": e.task_id,
        }
        assert got == ref, e.episode_id


def test_engine_matches_step_by_step_play_with_scripted_agents() -> None:
    engine = RolloutEngine(ENV, OraclePolicy(), ScriptedUser(), num_envs=7, samples_per_group=3, seed=4)
    episodes = engine.run(40, progress=False)
    assert [e.episode_id for e in episodes] == [f"g{i // 3}-s{i % 3}" for i in range(40)]
    assert {e.first_move for e in episodes} == {"ANSWER", "MULTI", "CLARIFY"}
    assert_same_as_step_by_step(engine, episodes, OraclePolicy(), ScriptedUser())


def test_engine_matches_step_by_step_play_with_tiny_model(tiny_backend: TransformersBackend) -> None:
    # The tiny model as assistant (its messages do not parse: one turn each) and as the user
    # of an oracle assistant (clarifying replies and MULTI extractions go through the model).
    cases = [
        (LLMAssistant(tiny_backend, GREEDY, prompt_style="compact"), ScriptedUser()),
        (OraclePolicy(), LLMUser(tiny_backend, GREEDY)),
    ]
    for assistant, user in cases:
        engine = RolloutEngine(ENV, assistant, user, num_envs=6, samples_per_group=2, seed=1)
        episodes = engine.run(12, progress=False)
        assert_same_as_step_by_step(engine, episodes, assistant, user)
    assert {e.first_move for e in episodes} >= {"CLARIFY", "MULTI"} and engine.stats.user_tokens > 0


def test_sampled_episodes_do_not_depend_on_how_many_envs_share_a_batch(tiny_backend: TransformersBackend) -> None:
    sampled = SamplingParams(temperature=1.0, max_new_tokens=12)
    runs = []
    for num_envs in (1, 5):
        assistant = LLMAssistant(tiny_backend, sampled, prompt_style="compact")
        engine = RolloutEngine(
            ENV, assistant, LLMUser(tiny_backend, sampled), num_envs=num_envs, samples_per_group=3, seed=2
        )
        runs.append([(e.messages, e.assistant_token_ids) for e in engine.run(9, progress=False)])
    assert runs[0] == runs[1]
    assert len({str(m) for m, _ in runs[0]}) > 1  # the samples differ between episodes


def test_llm_episode_records_token_ids_and_chat(tiny_backend: TransformersBackend) -> None:
    assistant = LLMAssistant(tiny_backend, GREEDY, prompt_style="compact")
    engine = RolloutEngine(ENV, assistant, ScriptedUser(), num_envs=4, samples_per_group=2)
    episode = engine.run(1, progress=False)[0]
    reference = assistant.generate_batch(
        [engine.envs[0].reset(seed=engine.episode_seed(0), options=dict(zip(("task", "costs"), engine.group(0))))[0]]
    )[0]
    assert episode.assistant_token_ids == [list(reference.token_ids)]
    assert episode.chat[0]["role"] == "system" and episode.chat[0]["content"].startswith("question price ")
    assert episode.chat[1:] == episode.messages


def test_lockstep_calls_each_backend_once_per_step(tiny_backend: TransformersBackend) -> None:
    assistant_backend, user_backend = CountingBackend(tiny_backend), CountingBackend(tiny_backend)
    engine = RolloutEngine(ENV, LLMAssistant(assistant_backend, GREEDY), ScriptedUser(), num_envs=8)
    engine.run(20, progress=False)
    assert len(assistant_backend.batch_sizes) == engine.stats.steps == engine.stats.assistant_calls
    assert assistant_backend.batch_sizes == [8, 8, 4]  # one-turn episodes: all 8 slots refill each step

    engine = RolloutEngine(ENV, OraclePolicy(), LLMUser(user_backend, GREEDY), num_envs=8, seed=2)
    engine.run(24, progress=False)
    assert 0 < len(user_backend.batch_sizes) == engine.stats.user_calls <= engine.stats.steps
    assert max(user_backend.batch_sizes) > 1


def test_samples_of_a_group_share_task_and_prices() -> None:
    engine = RolloutEngine(ENV, OraclePolicy(), ScriptedUser(), num_envs=5, samples_per_group=4, seed=9)
    episodes = engine.run(32, progress=False)
    groups: dict[str, list] = {}
    for e in episodes:
        groups.setdefault(e.group_id, []).append(e)
    assert len(groups) == 8 and all(len(g) == 4 for g in groups.values())
    for members in groups.values():
        assert len({(m.task_id, json.dumps(m.costs)) for m in members}) == 1
        assert len({m.metadata["seed"] for m in members}) == 4
    assert len({g[0].task_id for g in groups.values()}) == 8
    again = RolloutEngine(ENV, OraclePolicy(), ScriptedUser(), num_envs=3, samples_per_group=4, seed=9).run(
        32, progress=False
    )
    assert [e.to_json() for e in again] == [e.to_json() for e in episodes]  # the batching changes nothing


def test_explore_first_move_opens_each_sample_of_a_group_with_its_own_move(
    tiny_backend: TransformersBackend,
) -> None:
    sampled = SamplingParams(temperature=1.0, max_new_tokens=8)
    assistant = LLMAssistant(tiny_backend, sampled, prompt_style="compact")
    engine = RolloutEngine(
        ENV, assistant, ScriptedUser(), num_envs=4, samples_per_group=3, seed=2, explore_first_move=True
    )
    episodes = engine.run(12, progress=False)
    for e in episodes:
        tag = ("ANSWER", "MULTI", "CLARIFY")[e.sample_index]
        assert e.metadata["forced_first_move"] == tag and e.first_move == tag
        assert e.messages[1]["content"].startswith(f"{tag}:")  # messages[0] is the user's question
        first = next(m for m in e.chat if m["role"] == "assistant")  # what SFT trains on
        assert first["content"].startswith(f"{tag}:")
    clarified = [e for e in episodes if e.first_move == "CLARIFY"]
    assert all(len(e.moves) == 2 for e in clarified)  # only the first message is forced
    free = RolloutEngine(ENV, assistant, ScriptedUser(), num_envs=4, samples_per_group=3, seed=2).run(
        12, progress=False
    )
    assert [e.first_move for e in free] != [e.first_move for e in episodes]
    with pytest.raises(ValueError, match=r"cannot \(it is not an LLM assistant\)"):
        RolloutEngine(ENV, OraclePolicy(), ScriptedUser(), samples_per_group=3, explore_first_move=True)


class FailingUser(ScriptedUser):
    """A scripted user that dies (like a killed process) after some batches."""

    def __init__(self, calls_before_failure: int) -> None:
        super().__init__()
        self.calls_left = calls_before_failure

    def act_batch(self, requests: Sequence[UserRequest]) -> list[str]:
        if self.calls_left == 0:
            raise RuntimeError("killed")
        self.calls_left -= 1
        return super().act_batch(requests)


def test_resume_after_a_kill_loses_nothing_and_writes_no_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "episodes.jsonl"
    with pytest.raises(RuntimeError, match="killed"):
        RolloutEngine(ENV, OraclePolicy(), FailingUser(2), num_envs=4, seed=3).run(30, out, progress=False)
    partial = read_episodes(out)
    assert 0 < len(partial) < 30
    resumed = RolloutEngine(ENV, OraclePolicy(), ScriptedUser(), num_envs=4, seed=3)
    episodes = resumed.run(30, out, progress=False)
    assert resumed.stats.episodes == 30 - len(partial)
    on_file = read_episodes(out)
    assert len(on_file) == len({e.episode_id for e in on_file}) == 30
    uninterrupted = RolloutEngine(ENV, OraclePolicy(), ScriptedUser(), num_envs=4, seed=3).run(
        30, tmp_path / "u.jsonl", progress=False
    )
    by_id = {e.episode_id: e.to_json() for e in on_file}
    assert by_id == {e.episode_id: e.to_json() for e in uninterrupted}
    assert [e.to_json() for e in episodes] == [e.to_json() for e in uninterrupted]
    with pytest.raises(ValueError, match="same seed"):
        RolloutEngine(ENV, OraclePolicy(), ScriptedUser(), num_envs=4, seed=4).run(30, out, progress=False)


def _request(beast_task, kind: str, message: str) -> UserRequest:
    return UserRequest(kind, beast_task, 0, ({"role": "user", "content": beast_task.query},), parse_action(message))


def test_llm_user_leak_guard_replaces_a_reply_with_the_gold_answer(beast_task) -> None:
    user = LLMUser(FixedBackend(lambda c: "It was Ron Perlman, of course."))
    reply = user.reply_batch([_request(beast_task, "clarify", clarify("Which series?"))])[0]
    assert reply.text == "I mean 1987 series." and reply.source == "guard"
    assert user.leaks_blocked == 1


def test_llm_user_prompt_holds_the_meaning_but_not_the_answer(beast_task) -> None:
    seen = []
    user = LLMUser(FixedBackend(lambda c: seen.append(c) or "The one from 1987."))
    reply = user.reply_batch([_request(beast_task, "clarify", clarify("Which series?"))])[0]
    assert reply.text == "The one from 1987." and reply.source == "model" and user.leaks_blocked == 0
    prompt = " ".join(m["content"] for m in seen[0])
    assert beast_task.interpretations[0].question in prompt and "Which series?" in prompt
    assert "Perlman" not in prompt


def test_llm_user_guard_falls_back_when_the_facet_itself_leaks(beast_task) -> None:
    task = replace(beast_task, interpretations=(Interpretation("Who played him?", ("Perlman",), 1, "the Perlman one"),))
    user = LLMUser(FixedBackend(lambda c: "Perlman!"))
    assert user.act_batch([_request(task, "clarify", clarify("Which?"))]) == [UNHELPFUL_REPLY]
    assert user.leaks_blocked == 1


def test_llm_user_extracts_multi_with_the_model_and_answer_directly(beast_task) -> None:
    calls = []
    user = LLMUser(FixedBackend(lambda c: calls.append(c) or " Ron Perlman "))
    enumeration = multi([("1987 series", "Ron Perlman"), ("2012 series", "Jay Ryan")])
    texts = user.act_batch(
        [_request(beast_task, "extract", answer("Jay Ryan")), _request(beast_task, "extract", enumeration)]
    )
    assert texts == ["Jay Ryan", "Ron Perlman"] and len(calls) == 1
    silent = LLMUser(FixedBackend(lambda c: "  "))
    assert silent.act_batch([_request(beast_task, "extract", enumeration)]) == ["Ron Perlman"]  # scripted fallback


def test_llm_assistant_bad_output_is_a_protocol_error_in_the_record() -> None:
    assistant = LLMAssistant(FixedBackend(lambda c: "  I think it is probably Bob.  "))
    engine = RolloutEngine({**ENV, "rules": {"protocol_error_penalty": 0.25}}, assistant, ScriptedUser(), num_envs=3)
    episodes = engine.run(5, progress=False)
    for e in episodes:
        assert e.outcome == "protocol_error" and e.moves == ["ERROR"]
        assert e.reward == pytest.approx(-0.25) and "tag" in e.metadata["protocol_error"]
        assert e.messages[-1]["content"] == "I think it is probably Bob."
        assert e.assistant_token_ids == [[1, 2]]


def test_compact_prompt_shows_prices_digits_and_meanings(beast_task) -> None:
    text = compact_system(Costs(0.237, 0.0123), beast_task.context)
    assert text == (
        "question price 0.237\nword price 0.0123\n70% 1987 series: Ron Perlman\n30% 2012 series: Jay Ryan\n"
    )
    env = ClarifyEnv(**ENV)
    obs, _ = env.reset(seed=0, options={"task": beast_task, "costs": {"question": 0.237, "word": 0.0123}})
    chat = LLMAssistant(FixedBackend(str), prompt_style="compact").conversation(obs)
    assert chat == [{"role": "system", "content": text}, {"role": "user", "content": beast_task.query}]


def test_compact_prompt_lists_the_likeliest_meaning_first() -> None:
    meanings = [("1987 series", "A B", 0.2), ("2012 series", "C", 0.5), ("1999 film", "D E", 0.3)]
    context = render_context([Interpretation(f"Q {f}?", (a,), p, f) for f, a, p in meanings])
    lines = compact_system(Costs(0.1, 0.01), context).splitlines()[2:]
    assert lines == ["50% 2012 series: C", "30% 1999 film: D E", "20% 1987 series: A B"]


def test_reply_lookup_puts_the_named_meaning_under_the_reply(beast_task) -> None:
    env = ClarifyEnv(**ENV)
    obs, _ = env.reset(
        seed=0, options={"task": beast_task, "costs": {"question": 0.237, "word": 0.0123}, "interpretation": 1}
    )
    obs, *_ = env.step("CLARIFY: Which series, the 1987 one or the 2012 one?")
    reply = obs["messages"][-1]["content"]
    assert "2012" in reply and "Jay Ryan" not in reply
    chat = LLMAssistant(FixedBackend(str), prompt_style="compact", reply_lookup=True).conversation(obs)
    assert chat[-1] == {"role": "user", "content": f"{reply}\n2012 series: Jay Ryan"}
    assert chat[1]["content"] == beast_task.query  # the question itself names no meaning: unchanged
    # Off by default, and a reply that names no meaning gets nothing.
    assert LLMAssistant(FixedBackend(str), prompt_style="compact").conversation(obs)[-1]["content"] == reply
    turns = [
        {"role": "user", "content": beast_task.query},
        {"role": "assistant", "content": "CLARIFY: ?"},
        {"role": "user", "content": "I'm not sure what you are asking."},
    ]
    assert with_reply_lookup(turns, beast_task.context) == turns
    # The chat only grows from turn to turn (SFT trains on the last one as a whole).
    obs2, *_ = env.step("ANSWER: Jay Ryan")
    assert (
        LLMAssistant(FixedBackend(str), prompt_style="compact", reply_lookup=True).conversation(obs2)[: len(chat)]
        == chat
    )


def test_few_shot_examples_are_deterministic_and_show_every_move() -> None:
    demos = few_shot_demos(3)
    assert [parse_action(d.messages[1]["content"]).move for d in demos] == [Move.ANSWER, Move.MULTI, Move.CLARIFY]
    obs, _ = ClarifyEnv(**ENV).reset(seed=5)
    system = LLMAssistant(FixedBackend(str), few_shot=3).conversation(obs)[0]["content"]
    assert system.startswith(obs["system"]) and "Example 3" in system and "Assistant: CLARIFY:" in system
    turns = LLMAssistant(FixedBackend(str), prompt_style="compact", few_shot=2, few_shot_format="turns").conversation(
        obs
    )
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert turns[-1]["content"].endswith(obs["query"]) and turns[-1]["content"].startswith("question price")


def test_rollout_command_builds_the_tiny_model_and_resumes(tmp_path: Path) -> None:
    config = defaults_config(tmp_path)
    args = [
        "--quiet",
        f"run_dir={tmp_path}",
        "rollout.num_envs=4",
        "sampling.max_new_tokens=4",
        "assistant.prompt_style=compact",
        "user.kind=llm",
    ]
    assert main(["rollout", config, "--episodes", "6", "--summary-json", str(tmp_path / "a.json"), *args]) == 0
    assert (tmp_path / "tiny-model" / "config.json").exists() and (tmp_path / "rollout_config.yaml").exists()
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["episodes"] == 6 and abs(sum(first["move_mix"].values()) - 1) < 1e-9
    before = read_episodes(tmp_path / "episodes.jsonl")
    assert main(["rollout", config, "--episodes", "8", *args]) == 0
    after = read_episodes(tmp_path / "episodes.jsonl")
    assert len(after) == 8 and [e.to_json() for e in after[:6]] == [e.to_json() for e in before]  # 2 new ones
