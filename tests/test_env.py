import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import clarify_env  # noqa: F401  (registers the env)
from agents import OraclePolicy, ScriptedUser
from clarify_env import ClarifyEnv, Rules
from clarify_env.leak_guard import contains_answer


def play(env, policy, seed, options=None):
    obs, info = env.reset(seed=seed, options=options)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs))
        total += reward
        done = terminated or truncated
    return total, info


def test_readme_example_clarify_then_answer(beast_task):
    env = gym.make("clarify_env/Clarify-v0", source="synthetic", costs={"question": 0.2, "word": 0.01})
    obs, info = env.reset(seed=0, options={"task": beast_task, "interpretation": 0})
    assert "0.200" in obs["system"] and "0.0100" in obs["system"]
    assert np.allclose(obs["costs"], [0.2, 0.01])
    obs, reward, terminated, truncated, info = env.step("CLARIFY: Do you mean the 1987 show or the 2012 show?")
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert obs["messages"][-1] == {"role": "user", "content": "I mean 1987 series."}
    obs, reward, terminated, truncated, info = env.step("ANSWER: Ron Perlman")
    assert terminated and not truncated
    c = info["reward_components"]
    assert c["accuracy"] == 1.0 and c["questions"] == 1 and c["words"] == 2
    assert reward == pytest.approx(1.0 - 0.2 - 0.02)
    assert info["intended_question"] == beast_task.interpretations[0].question
    assert [m["role"] for m in info["transcript"]] == ["user", "assistant", "user", "assistant"]


def test_multi_is_scored_on_the_users_own_item(beast_task):
    env = ClarifyEnv(costs={"question": 0.2, "word": 0.01})
    for index, gold in [(0, "Ron Perlman"), (1, "Jay Ryan")]:
        env.reset(seed=0, options={"task": beast_task, "interpretation": index})
        _, reward, terminated, _, info = env.step("MULTI: 1987 series: Ron Perlman; 2012 series: Jay Ryan")
        assert info["extracted_answer"] == gold
        assert reward == pytest.approx(1.0 - 0.01 * 8)


def test_wrong_guess_scores_zero_accuracy(beast_task):
    env = ClarifyEnv(costs={"question": 0.2, "word": 0.01})
    env.reset(seed=0, options={"task": beast_task, "interpretation": 1})
    _, reward, _, _, info = env.step("answer: Ron Perlman")
    assert info["reward_components"]["accuracy"] == 0.0
    assert reward == pytest.approx(-0.02)


def test_off_topic_question_gets_honest_unhelpful_reply(beast_task):
    env = ClarifyEnv(costs={"question": 0.2, "word": 0.01})
    env.reset(seed=0, options={"task": beast_task, "interpretation": 0})
    obs, *_ = env.step("CLARIFY: Are you having a nice day?")
    assert "1987" not in obs["messages"][-1]["content"]


def test_protocol_error_ends_episode_with_penalty_not_exception(beast_task):
    env = ClarifyEnv(costs={"question": 0.2, "word": 0.01}, rules=Rules(protocol_error_penalty=0.25))
    env.reset(seed=0, options={"task": beast_task})
    _, reward, terminated, truncated, info = env.step("I think it is Ron Perlman")
    assert terminated and not truncated
    assert info["outcome"] == "protocol_error" and info["protocol_error"]
    assert reward == pytest.approx(-0.25)


def test_question_beyond_the_limit_truncates_with_zero_accuracy(beast_task):
    env = ClarifyEnv(costs={"question": 0.2, "word": 0.01}, rules={"max_questions": 1})
    env.reset(seed=0, options={"task": beast_task, "interpretation": 0})
    env.step("CLARIFY: Which year?")
    _, reward, terminated, truncated, info = env.step("CLARIFY: Really, which year?")
    assert truncated and not terminated
    assert info["outcome"] == "truncated"
    assert reward == pytest.approx(-0.4)


def test_step_after_end_is_a_clear_error(beast_task):
    env = ClarifyEnv()
    env.reset(seed=0, options={"task": beast_task})
    env.step("ANSWER: x")
    with pytest.raises(RuntimeError, match="reset"):
        env.step("ANSWER: x")


def test_bad_reset_options_are_named(beast_task):
    env = ClarifyEnv()
    with pytest.raises(ValueError, match="colour"):
        env.reset(seed=0, options={"colour": "red"})
    with pytest.raises(ValueError, match="out of range"):
        env.reset(seed=0, options={"task": beast_task, "interpretation": 5})


def test_reset_pins_task_from_dict_and_costs(beast_task):
    env = ClarifyEnv()
    obs, info = env.reset(seed=0, options={"task": beast_task.to_dict(), "costs": {"question": 0.5, "word": 0.0}})
    assert info["task_id"] == "beast" and info["costs"] == {"question": 0.5, "word": 0.0}


def test_gymnasium_env_checker_passes():
    check_env(ClarifyEnv(source="synthetic"), skip_render_check=True)
    check_env(gym.make("clarify_env/Clarify-v0").unwrapped, skip_render_check=True)


def test_same_seed_gives_same_episodes():
    def run(seed):
        env = ClarifyEnv(source="synthetic", costs="default:train")
        policy = OraclePolicy()
        return [play(env, policy, seed + i)[1]["transcript"] for i in range(50)]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_render_shows_prices_and_dialogue(beast_task):
    env = ClarifyEnv(render_mode="ansi", costs={"question": 0.2, "word": 0.01})
    env.reset(seed=0, options={"task": beast_task})
    env.step("ANSWER: Ron Perlman")
    text = env.render()
    assert "0.200" in text and "ANSWER: Ron Perlman" in text


def test_scripted_user_never_leaks_a_gold_answer_in_clarifications():
    env = ClarifyEnv(source="synthetic", costs="default:train", rules=Rules(max_questions=3))
    env.user = ScriptedUser()
    rng = np.random.default_rng(0)
    questions = [
        "Which one do you mean?",
        "Which year or version?",
        "What is the answer?",
        "Do you mean the film or the book?",
        "Who is it?",
        "Which place, team or role?",
    ]
    named = ambiguous = 0
    for seed in range(3000):
        env.reset(seed=seed)
        task = env.task
        golds = [a for i in task.interpretations for a in i.answers]
        # on-topic question naming every facet, then a random one
        facet_q = "Do you mean " + " or ".join(i.facet for i in task.interpretations) + "?"
        for k, q in enumerate((facet_q, questions[int(rng.integers(len(questions)))])):
            obs, *_ = env.step(f"CLARIFY: {q}")
            reply = obs["messages"][-1]["content"]
            assert not contains_answer(reply, golds), (task.id, reply)
            if k == 0 and task.is_ambiguous:
                ambiguous += 1
                named += task.interpretations[env.interpretation_index].facet in reply
    assert named == ambiguous > 2000  # a question naming every facet is answered with the user's own


class _ModelLikeUser(ScriptedUser):
    """Reads as the scripted user does but, like an LLM user, does not promise to."""

    reads_by_rule = False


def test_rule_expected_reward_removes_a_lucky_guess_for_any_user(beast_task):
    costs = {"question": 0.2, "word": 0.01}
    for user, exact in [(ScriptedUser(), True), (_ModelLikeUser(), False)]:
        env = ClarifyEnv(costs=costs, user=user)
        env.reset(seed=0, options={"task": beast_task, "interpretation": 1})
        _, reward, _, _, info = env.step("ANSWER: Jay Ryan")  # the 30% meaning: a lucky guess
        assert reward == pytest.approx(1.0 - 0.02)
        assert info["rule_expected_reward"] == pytest.approx(0.3 - 0.02)
        assert info["expected_reward"] == pytest.approx(0.3 - 0.02 if exact else 1.0 - 0.02)
        # after a clarification the response can depend on the meaning: realised, for both
        env.reset(seed=0, options={"task": beast_task, "interpretation": 1})
        env.step("CLARIFY: Which series?")
        _, reward, _, _, info = env.step("ANSWER: Jay Ryan")
        assert info["rule_expected_reward"] == info["expected_reward"] == pytest.approx(reward)


def test_render_observation_is_what_the_env_shows(beast_task):
    from clarify_env import Costs, render_observation

    env = ClarifyEnv(costs={"question": 0.2, "word": 0.01}, rules={"max_questions": 2})
    first, _ = env.reset(seed=0, options={"task": beast_task, "interpretation": 0})
    after, *_ = env.step("CLARIFY: Which year?")
    costs = Costs(question=0.2, word=0.01)
    for obs, messages, questions in ((first, first["messages"], 0), (after, after["messages"], 1)):
        rendered = render_observation(beast_task, costs, env.rules, messages, questions)
        assert rendered.keys() == obs.keys()
        assert all(np.array_equal(rendered[k], obs[k]) if k == "costs" else rendered[k] == obs[k] for k in obs)
    # at other prices only the price text and the price vector change
    other = render_observation(beast_task, Costs(question=0.05, word=0.03), env.rules, after["messages"], 1)
    assert "0.050" in other["system"] and "0.0300" in other["system"] and other["messages"] == after["messages"]
