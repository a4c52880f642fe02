"""``clarify play``: a person plays the assistant or the user in the terminal."""

from __future__ import annotations

import argparse
import json
from typing import Callable

from agents.base import UserSimulator
from agents.baselines import OraclePolicy
from clarify_env.dialogue import UserRequest
from clarify_env.env import ClarifyEnv
from clarify_env.scoring import Rules
from clarify_env.specs import parse_cli_spec


class HumanUser(UserSimulator):
    """The user simulator role, played by a person at the terminal."""

    name = "human_user"

    def __init__(self, ask: Callable[[str], str], say: Callable[[str], None]) -> None:
        self.ask, self.say = ask, say

    def act(self, request: UserRequest) -> str:
        if request.kind == "clarify":
            self.say(f"\nASSISTANT asks: {request.action.text}")
            return self.ask("Your reply> ").strip() or "I'd rather not say."
        self.say(f"\nASSISTANT's final response ({request.action.move.value}): {request.action.text}")
        return self.ask("The answer you take away> ").strip()


def play(
    env: ClarifyEnv,
    role: str,
    seed: int,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
) -> dict:
    """Play one episode with a person in ``role`` ("assistant" or "user"); returns the final info."""
    if role not in ("assistant", "user"):
        raise ValueError(f"role must be 'assistant' or 'user', got {role!r}")
    assistant = OraclePolicy(env.rules)
    if role == "user":
        env.user = HumanUser(ask, say)
    obs, info = env.reset(seed=seed)
    if role == "assistant":
        say(obs["system"])
        say(f"\nUSER: {obs['query']}")
    else:
        interp = env.task.interpretations[env.interpretation_index]
        say(env.costs.describe())
        say(f"\nYou asked: {obs['query']}\nWhat you really mean (secret): {interp.question}")
    done = False
    while not done:
        if role == "assistant":
            message = ask("\nYour move (CLARIFY: / ANSWER: / MULTI:)> ")
        else:
            message = assistant.act(obs)
        obs, reward, terminated, truncated, info = env.step(message)
        done = terminated or truncated
        if not done and role == "assistant":
            say(f"USER: {obs['messages'][-1]['content']}")
    say("\n--- episode over ---")
    say(f"Hidden intent: {info['intended_question']}  (gold: {' | '.join(info['gold_answers'])})")
    say(f"Outcome: {info['outcome']}" + (f" ({info['protocol_error']})" if info["protocol_error"] else ""))
    say(f"Answer taken away: {info['extracted_answer']!r}")
    say("Reward breakdown: " + json.dumps({k: round(v, 4) for k, v in info["reward_components"].items()}))
    return info


def _run(args: argparse.Namespace) -> int:
    source, costs = parse_cli_spec(args.source), parse_cli_spec(args.costs)
    env = ClarifyEnv(source=source, costs=costs, rules=Rules(max_questions=args.max_questions))
    for episode in range(args.episodes):
        try:
            play(env, args.role, seed=args.seed + episode)
        except EOFError:
            print("\nbye")
            return 0
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("play", help="play the assistant or the user in the terminal against the scripted counterpart")
    p.add_argument("--role", choices=["assistant", "user"], default="assistant", help="the part you play")
    p.add_argument("--source", default="synthetic", help='task source: "synthetic" or a JSON spec')
    p.add_argument(
        "--costs",
        default="default:train",
        help='prices: a split such as "default:heldout" or JSON {"question": 0.2, "word": 0.01}',
    )
    p.add_argument("--max-questions", type=int, default=1)
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)
