"""The clarification dialogue as a Gymnasium environment.

Actions are the assistant's messages (text in the protocol of ``clarify_env.protocol``).
Observations are what the assistant sees: the system prompt (protocol, prices, context),
the dialogue so far, the prices as numbers and the number of questions asked. The user
simulator is an injected agent (default: the scripted user).

``step`` is ``begin_step`` + the user simulator's turn + ``finish_step``; a rollout engine
that batches user turns across environments calls the two halves itself.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from clarify_env.costs import Costs, CostSampler, make_cost_sampler
from clarify_env.dialogue import UserRequest
from clarify_env.prompt import system_prompt
from clarify_env.protocol import Action, Move, ProtocolError, parse_action
from clarify_env.scoring import RewardComponents, Rules, expected_score, final_words, meanings_of, score
from clarify_env.sources import TaskSource, make_source
from clarify_env.spaces import FreeText
from clarify_env.tasks import Task

MAX_TEXT = 16_384
MAX_MESSAGES = 64

StepResult = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]


def render_observation(
    task: Task,
    costs: Costs,
    rules: Rules,
    messages: Sequence[Mapping[str, str]],
    questions: int,
    system: str | None = None,
) -> dict[str, Any]:
    """The observation the env shows the assistant for ``task`` at ``costs`` after ``messages``
    and ``questions`` clarifying questions (``system``: its system prompt, if already rendered).
    Public so that a stage that replays a dialogue at other prices (hindsight relabelling) shows
    the model exactly what the env would have."""
    return {
        "system": system if system is not None else system_prompt(costs, task.context, rules.max_questions, rules.unit),
        "query": task.query,
        "context": task.context or "",
        "messages": tuple(dict(m) for m in messages),
        "costs": costs.as_array(),
        "questions_asked": min(questions, rules.max_questions + 1),
    }


class ClarifyEnv(gym.Env):
    """One dialogue per episode between an assistant (the agent acting) and a user simulator.

    Args:
        source: a ``TaskSource`` or a spec for ``make_source`` (e.g. ``"synthetic"``).
        costs: a cost sampler or a spec for ``make_cost_sampler`` (e.g. ``{"question": 0.2,
            "word": 0.01}`` or ``"default:train"``).
        user: the user simulator (``agents.UserSimulator``, or any object with
            ``act(UserRequest) -> str``); default: the scripted user.
        rules: the ``Rules`` episodes are scored under (or a mapping of its fields):
            ``max_questions``, ``protocol_error_penalty``, ``accuracy_metric``.
    """

    metadata = {"render_modes": ["ansi", "human"]}

    def __init__(
        self,
        source: TaskSource | str | Mapping[str, Any] = "synthetic",
        costs: CostSampler | Costs | str | Mapping[str, Any] = "default:train",
        user: Any | None = None,
        rules: Rules | Mapping[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.rules = Rules.of(rules)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.source = make_source(source)
        self.cost_sampler = make_cost_sampler(costs)
        if user is None:
            # the default counterpart, so that gym.make(ENV_ID) plays out of the box (imported
            # here, not at the top: the env does not depend on the agents otherwise)
            from agents.scripted_user import ScriptedUser

            user = ScriptedUser()
        self.user = user
        self.render_mode = render_mode

        text = FreeText(MAX_TEXT)
        self.action_space = text
        self.observation_space = spaces.Dict(
            {
                "system": text,
                "query": text,
                "context": text,
                "messages": spaces.Sequence(spaces.Dict({"role": FreeText(16), "content": text}), stack=False),
                "costs": spaces.Box(0.0, np.inf, shape=(2,), dtype=np.float32),
                "questions_asked": spaces.Discrete(self.rules.max_questions + 2),
            }
        )
        self.task: Task | None = None
        self.costs: Costs | None = None
        self.interpretation_index = 0
        self.messages: list[dict[str, str]] = []
        self.questions = 0
        self.done = True
        self._pending: tuple[str, Any] | None = None

    # --- Gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a dialogue. ``options`` may pin ``task`` (Task or dict), ``costs`` (Costs or
        ``{"question", "word"}``) and ``interpretation`` (index of the user's meaning)."""
        super().reset(seed=seed)
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"reset options must be a mapping of task, costs, interpretation, got {options!r}")
        options = dict(options or {})
        unknown = set(options) - {"task", "costs", "interpretation"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; use task, costs, interpretation")
        task = self._task_option(options.get("task"))
        costs = self._costs_option(options.get("costs"))
        index = options.get("interpretation")
        if index is None:
            priors = task.priors
            index = int(self.np_random.choice(len(priors), p=priors)) if len(priors) > 1 else 0
        elif isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"reset option interpretation must be an index (int), got {index!r}")
        elif not 0 <= index < len(task.interpretations):
            raise ValueError(f"interpretation {index} out of range for task {task.id} with {len(task.interpretations)}")
        self.task, self.costs, self.interpretation_index = task, costs, int(index)
        self.messages = [{"role": "user", "content": task.query}]
        self.questions = 0
        self.done = False
        self._pending = None
        self._system = system_prompt(costs, task.context, self.rules.max_questions, self.rules.unit)
        return self._observation(), self._info()

    def step(self, action: str) -> StepResult:
        request = self.begin_step(action)
        try:
            reply = None if request is None else self.user.act(request)
        except Exception:
            self.abandon()
            raise
        return self.finish_step(reply)

    def abandon(self) -> None:
        """End the episode without scoring it (the user simulator failed mid-step): the next call
        must be ``reset``."""
        self._pending, self.done = None, True

    def render(self) -> str | None:
        text = self.transcript_text()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    # --- the two halves of step ------------------------------------------------------------
    def begin_step(self, action: str) -> UserRequest | None:
        """Record the assistant's message; return the user turn it needs (None if none)."""
        if self.done or self.task is None:
            raise RuntimeError("episode is over: call reset() before step()")
        if self._pending is not None:
            raise RuntimeError("begin_step() called twice without finish_step()")
        self.messages.append({"role": "assistant", "content": action if isinstance(action, str) else repr(action)})
        parsed = parse_action(action)
        if isinstance(parsed, ProtocolError):
            self._pending = ("protocol_error", parsed)
            return None
        if parsed.move is Move.CLARIFY:
            self.questions += 1
            if self.questions > self.rules.max_questions:
                self._pending = ("truncated", parsed)
                return None
            self._pending = ("clarify", parsed)
        else:
            self._pending = ("final", parsed)
        kind = "clarify" if parsed.move is Move.CLARIFY else "extract"
        return UserRequest(kind, self.task, self.interpretation_index, tuple(self.messages), parsed)

    def finish_step(self, user_reply: str | None) -> StepResult:
        """Apply the user's reply (None when ``begin_step`` asked for none) and score."""
        if self._pending is None:
            raise RuntimeError("finish_step() called without begin_step()")
        outcome, action = self._pending
        self._pending = None
        if outcome == "clarify":
            if not isinstance(user_reply, str):
                self.abandon()
                raise TypeError(f"the user simulator must return a str reply, got {type(user_reply).__name__}")
            self.messages.append({"role": "user", "content": user_reply})
            return self._observation(), 0.0, False, False, self._info(move=Move.CLARIFY)
        self.done = True
        if outcome == "final":
            if not isinstance(user_reply, str):
                self.abandon()
                raise TypeError(
                    f"the user simulator must return the extracted answer as a str, got {type(user_reply).__name__}"
                )
            components = self._score(user_reply, final_words(action, self.rules))
            info = self._info(move=action.move, components=components, outcome="answered", extracted=user_reply)
            info["rule_expected_reward"] = self._rule_expected_reward(action, components.reward)
            info["expected_reward"] = (
                info["rule_expected_reward"] if getattr(self.user, "reads_by_rule", False) else components.reward
            )
            return self._observation(), components.reward, True, False, info
        if outcome == "truncated":
            components = self._score(None, 0)
            info = self._info(move=Move.CLARIFY, components=components, outcome="truncated")
            info["expected_reward"] = info["rule_expected_reward"] = components.reward
            return self._observation(), components.reward, False, True, info
        components = self._score(None, 0, protocol_error=True)
        info = self._info(components=components, outcome="protocol_error", error=action.reason)
        info["expected_reward"] = info["rule_expected_reward"] = components.reward
        return self._observation(), components.reward, True, False, info

    # --- helpers -----------------------------------------------------------------------------
    def _task_option(self, task: Any) -> Task:
        if task is None:
            return self.source.sample(self.np_random)
        if isinstance(task, Task):
            return task
        if isinstance(task, Mapping):
            return Task.from_dict(task)
        raise TypeError(f"reset option task must be a Task or a task dict (Task.to_dict()), got {task!r}")

    def _costs_option(self, costs: Any) -> Costs:
        if costs is None:
            return self.cost_sampler.sample(self.np_random)
        if isinstance(costs, Costs):
            return costs
        if not isinstance(costs, (Mapping, str)):
            raise TypeError(
                f"reset option costs must be Costs, {{'question': ..., 'word': ...}} or a cost spec, got {costs!r}"
            )
        return make_cost_sampler(costs).sample(self.np_random)

    def _rule_expected_reward(self, action: Action, realised: float) -> float:
        """The reward of a final response averaged over the user's possible meanings, each read
        by rule (``scoring.expected_score``), where the response cannot depend on the meaning:
        given before any clarification. After a clarification it is the realised reward.

        With a user that reads by that rule (``reads_by_rule``, as the scripted user does) this is
        the exact expectation and is also ``info["expected_reward"]``: it removes the luck of a
        guess from ReST's filter. With an LLM user it is the value the response would have were
        the user's reading perfect (``info["rule_expected_reward"]`` only; ``expected_reward`` is
        then the realised reward), the score of ``rest.filter.score: rule_expected_reward``.
        """
        if self.questions:
            return realised
        return expected_score(meanings_of(self.task), action, self.costs, self.rules, self.task.query).reward

    def _score(self, extracted: str | None, words: int, protocol_error: bool = False) -> RewardComponents:
        golds = self.task.interpretations[self.interpretation_index].answers
        return score(extracted, golds, self.costs, self.questions, words, self.rules, protocol_error)

    def _observation(self) -> dict[str, Any]:
        return render_observation(self.task, self.costs, self.rules, self.messages, self.questions, self._system)

    def _info(
        self,
        move: Move | None = None,
        components: RewardComponents | None = None,
        outcome: str | None = None,
        extracted: str | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "task_id": self.task.id,
            "costs": self.costs.to_dict(),
            "questions_asked": self.questions,
            "transcript": [dict(m) for m in self.messages],
            "move": move.value if move is not None else None,
            "protocol_error": error,
        }
        if components is not None:  # the episode is over: reveal the hidden intent
            interp = self.task.interpretations[self.interpretation_index]
            info.update(
                reward_components=components.to_dict(),
                outcome=outcome,
                interpretation=self.interpretation_index,
                intended_question=interp.question,
                gold_answers=list(interp.answers),
                extracted_answer=extracted,
            )
        return info

    def transcript_text(self) -> str:
        """The dialogue as plain text, with the prices."""
        if self.task is None:
            return ""
        lines = [self.costs.describe()]
        lines += [f"{m['role'].upper():>9}: {m['content']}" for m in self.messages]
        return "\n".join(lines)
