import subprocess
import sys

from clarify_env.env import ClarifyEnv
from trainers.play import play


def scripted_io(answers):
    answers = iter(answers)
    shown = []
    return (lambda prompt: next(answers)), shown.append, shown


def test_person_as_assistant_sees_prices_then_intent_and_breakdown(beast_task):
    env = ClarifyEnv(costs={"question": 0.2, "word": 0.01})
    env.source.sample = lambda rng: beast_task
    ask, say, shown = scripted_io(["CLARIFY: Which year?", "ANSWER: Ron Perlman"])
    info = play(env, "assistant", seed=0, ask=ask, say=say)
    text = "\n".join(shown)
    assert "0.200" in text and "0.0100" in text
    assert "Hidden intent:" in text and "Reward breakdown:" in text
    assert info["reward_components"]["questions"] == 1


def test_person_as_user_replies_and_takes_an_answer_away(beast_task):
    env = ClarifyEnv(costs={"question": 0.0, "word": 0.05})  # the oracle clarifies when questions are free
    env.source.sample = lambda rng: beast_task
    ask, say, shown = scripted_io(["The 2012 one.", "Jay Ryan"])
    info = play(env, "user", seed=0, ask=ask, say=say)
    text = "\n".join(shown)
    assert "What you really mean (secret)" in text and "ASSISTANT asks" in text
    assert info["extracted_answer"] == "Jay Ryan"


def test_clarify_play_console_script_runs_an_episode():
    out = subprocess.run(
        [sys.executable, "-m", "trainers.cli", "play", "--seed", "3", "--costs", '{"question": 0.1, "word": 0.01}'],
        input="ANSWER: nobody\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Price of a clarifying question: 0.100" in out.stdout
    assert "Reward breakdown" in out.stdout
