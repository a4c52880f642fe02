"""This environment as a `verifiers <https://github.com/PrimeIntellect-ai/verifiers>`_ multi-turn
environment, for verifiers' evaluation and the trainers built on it (prime-rl).

    import verifiers as vf
    env = vf.load_environment("clarify-env", source="synthetic", num_examples=200)   # or load_environment(...)

Each example is one episode of ``ClarifyEnv``: a task, prices drawn per example from the cost
sampler, and a hidden meaning drawn by the env's reset, all from the example's seed. The model's
messages are the assistant's turns; the environment's turns are this env's user simulator (the
scripted user by default) replying to clarifying questions; the dialogue ends where
``ClarifyEnv`` ends it (a final response, a protocol error, a question past the limit). The
rubric is this env's reward, its terms separate metrics (``accuracy``, ``question_cost``,
``word_cost``, ``protocol_penalty``, weights 1, -1, -1, -1), so a transcript scores the same
here as in ``ClarifyEnv``. Needs ``pip install -e '.[verifiers]'`` (verifiers 0.2's classic
``MultiTurnEnv`` / ``Rubric`` API).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Mapping

import numpy as np

from clarify_env.costs import Costs, make_cost_sampler
from clarify_env.env import ClarifyEnv
from clarify_env.scoring import Rules
from clarify_env.sources import ListSource, make_source
from clarify_env.tasks import Task

COMPONENTS = {"accuracy": 1.0, "question_cost": -1.0, "word_cost": -1.0, "protocol_penalty": -1.0}


def example_rows(source: Any, costs: Any, num_examples: int, seed: int, rules: Rules) -> list[dict[str, Any]]:
    """The dataset: per example its prompt (system text with the prices, the user's query), the
    hidden meaning's first gold answer, and in ``info`` the task (``clarify_task``), prices and meaning."""
    tasks, sampler = make_source(source), make_cost_sampler(costs)
    env = ClarifyEnv(source=tasks, costs=sampler, rules=rules)
    rows = []
    for i in range(num_examples):
        rng = np.random.default_rng([seed, i])
        task = tasks[i % len(tasks)] if isinstance(tasks, ListSource) else tasks.sample(rng)
        obs, _ = env.reset(seed=int(rng.integers(2**31)), options={"task": task, "costs": sampler.sample(rng)})
        # (not "task": verifiers reads info["task"] as its own task payload)
        info = {
            "clarify_task": task.to_dict(),
            "costs": env.costs.to_dict(),
            "interpretation": env.interpretation_index,
        }
        rows.append(
            {
                "prompt": [{"role": "system", "content": obs["system"]}, {"role": "user", "content": task.query}],
                "answer": task.interpretations[env.interpretation_index].answer,
                "info": json.dumps(info),
            }
        )
    return rows


def replay(info: Mapping[str, Any], assistant_messages: list[str], rules: Rules = Rules(), user: Any = None) -> dict:
    """A transcript's assistant messages played in ``ClarifyEnv`` on the example's task, prices and
    hidden meaning; the env's final info (its ``reward_components`` score the transcript). A
    transcript that stops before the env ends it (the model said nothing more) ends with an empty
    message, as the verifiers environment plays an empty model response."""
    env = ClarifyEnv(source="synthetic", rules=rules, user=user)
    env.reset(
        seed=0,
        options={
            "task": Task.from_dict(info["clarify_task"]),
            "costs": info["costs"],
            "interpretation": info["interpretation"],
        },
    )
    result: dict = {}
    for message in assistant_messages:
        _, _, terminated, truncated, result = env.step(message)
        if terminated or truncated:
            return result
    return env.step("")[4]


def _component(name: str):
    def metric(state: dict, **kwargs: Any) -> float:
        return float((state.get("clarify_info") or {}).get("reward_components", {}).get(name, 0.0))

    metric.__name__ = name
    return metric


def load_environment(
    source: Any = "synthetic",
    costs: Any = "default:train",
    num_examples: int = 100,
    seed: int = 0,
    rules: Rules | Mapping[str, Any] | None = None,
    user: Any = None,
    **kwargs: Any,
) -> Any:
    """The verifiers environment (see the module docstring). ``source`` and ``costs`` take the
    env's specs; ``user`` a user simulator (default: the scripted user); other keyword arguments go
    to ``vf.MultiTurnEnv``."""
    import verifiers as vf
    from datasets import Dataset

    rules = Rules.of(rules)

    class ClarifyVerifiersEnv(vf.MultiTurnEnv):
        """Each rollout steps its own ``ClarifyEnv`` with the model's messages."""

        async def setup_state(self, state: dict) -> dict:
            info = state["info"] if isinstance(state["info"], Mapping) else json.loads(state["info"])
            env = ClarifyEnv(source="synthetic", rules=rules, user=user)
            env.reset(
                seed=0,
                options={
                    "task": Task.from_dict(info["clarify_task"]),
                    "costs": Costs(**info["costs"]),
                    "interpretation": info["interpretation"],
                },
            )
            state.update(clarify_env=env, clarify_info=None, reply=None, stepped=0)
            return state

        @vf.stop(priority=101)  # before verifiers' has_error, which would abort an empty response unscored
        async def dialogue_over(self, state: dict) -> bool:
            """Step the env with each new assistant message; over when the env ends the episode. An
            empty model response (verifiers raises EmptyModelResponseError and records no message)
            is the empty message ClarifyEnv scores as a protocol error."""
            steps = state["trajectory"]
            if isinstance(state.get("error"), vf.EmptyModelResponseError) and state["clarify_info"] is None:
                state["error"] = None
                message = ""
            elif len(steps) == state["stepped"]:
                return False
            else:
                state["stepped"] = len(steps)
                message = steps[-1]["completion"][-1]["content"] or ""
            obs, _, terminated, truncated, info = await asyncio.to_thread(state["clarify_env"].step, message)
            if terminated or truncated:
                state["clarify_info"] = info
                return True
            state["reply"] = obs["messages"][-1]["content"]
            return False

        async def env_response(self, messages: Any, state: dict, **kwargs: Any) -> list[dict[str, str]]:
            return [{"role": "user", "content": state["reply"]}]

    dataset = Dataset.from_list(example_rows(source, costs, num_examples, seed, rules))
    rubric = vf.Rubric(funcs=[_component(n) for n in COMPONENTS], weights=list(COMPONENTS.values()))
    kwargs.setdefault("max_turns", rules.max_questions + 2)
    return ClarifyVerifiersEnv(dataset=dataset, eval_dataset=dataset, rubric=rubric, **kwargs)
