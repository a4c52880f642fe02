"""The agent interfaces: what an assistant and a user simulator implement.

Every agent maps an observation to a message with ``act`` (one) or ``act_batch`` (many);
subclasses override either and get the other. The rollout engine asks more of each role,
and these classes declare it with working defaults, so a subclass implements only what it
does differently:

- ``Assistant.generate_batch(observations, seeds, prefixes)``: one ``Completion`` per
  observation (LLM assistants: one batched model call, with the token ids; ``seeds`` make
  each sample independent of its batch, ``prefixes`` force the opening of a message and
  need ``forces_prefixes``); ``Assistant.conversation(observation)``: the chat the
  assistant continues, which SFT trains on.
- ``UserSimulator.reply_batch(requests, seeds)``: one ``UserReply`` per request (LLM users
  say where each reply came from: the model, the leak guard, a fallback);
  ``UserSimulator.reads_by_rule``: True when the user reads a final response exactly as
  ``clarify_env.scoring.taken_away`` does, so that the env can score a first-turn final
  response against every meaning (``info["expected_reward"]``).

Any object with ``act`` (and optionally ``act_batch``) can play either role: the rollout
engine wraps it with ``as_assistant`` / ``as_user``.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from agents.generation import Completion
from clarify_env.dialogue import UserRequest


class Agent(ABC):  # noqa: B024 (abstract: a subclass must override act or act_batch)
    """Maps an observation to a message.

    Assistant agents receive the env's observation dict; user agents receive a
    ``clarify_env.dialogue.UserRequest``. Subclasses override ``act`` (scripted agents) or
    ``act_batch`` (LLM agents, which batch generation); each default calls the other.
    """

    name: str = "agent"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        interface = cls.__module__ == __name__  # Assistant and UserSimulator: subclassed, not played
        if cls.act is Agent.act and cls.act_batch is Agent.act_batch and not interface:
            raise TypeError(f"{cls.__name__} must override act or act_batch")

    def act(self, observation: Any) -> str:
        """The message for one observation."""
        return self.act_batch([observation])[0]

    def act_batch(self, observations: Sequence[Any]) -> list[str]:
        """The messages for a batch of observations, in order."""
        return [self.act(o) for o in observations]


def generic_chat(observation: Mapping[str, Any]) -> list[dict[str, str]]:
    """The conversation of an assistant without its own prompt format: env system prompt + dialogue."""
    return [{"role": "system", "content": observation["system"]}, *(dict(m) for m in observation["messages"])]


class Assistant(Agent):
    """An assistant policy (see the module docstring for what the rollout engine calls)."""

    forces_prefixes: bool = False  # whether generate_batch honours ``prefixes`` (exploring starts)

    def generate_batch(
        self,
        observations: Sequence[Mapping[str, Any]],
        seeds: Sequence[int] | None = None,
        prefixes: Sequence[str] | None = None,
    ) -> list[Completion]:
        """One completion per observation (the default: ``act_batch``'s messages, no token ids)."""
        if prefixes is not None and any(prefixes):
            raise ValueError(f"assistant {self.name!r} cannot force the opening of its messages")
        return [Completion(text, (), (), "stop") for text in self.act_batch(observations)]

    def conversation(self, observation: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat this assistant continues at ``observation`` (the default: ``generic_chat``)."""
        return generic_chat(observation)


@dataclass(frozen=True)
class UserReply:
    """The user's turn and where it came from.

    ``source`` is ``"model"`` (the model's text), ``"guard"`` (the model's reply leaked the
    answer and was replaced), ``"fallback"`` (the model said nothing usable), ``"direct"``
    (no model needed: the answer of an ANSWER move is taken as is) or ``"scripted"`` (a
    user without a model). ``completion`` is the model's output when it was asked.
    """

    text: str
    source: str
    completion: Completion | None = None


class UserSimulator(Agent):
    """A user simulator (see the module docstring for what the rollout engine calls)."""

    reads_by_rule: bool = False

    def reply_batch(self, requests: Sequence[UserRequest], seeds: Sequence[int] | None = None) -> list[UserReply]:
        """One reply per request (the default: ``act_batch``'s texts)."""
        return [UserReply(text, "scripted") for text in self.act_batch(requests)]


class _Delegate:
    """Plays the role through a plain object's ``act`` (and ``act_batch``, where it has one)."""

    def __init__(self, agent: Any) -> None:
        self.agent, self.name = agent, getattr(agent, "name", type(agent).__name__)

    def act(self, observation: Any) -> str:
        return self.agent.act(observation)

    def act_batch(self, observations: Sequence[Any]) -> list[str]:
        batch = getattr(self.agent, "act_batch", None)
        return list(batch(observations)) if batch is not None else [self.agent.act(o) for o in observations]


class _WrappedAssistant(_Delegate, Assistant):
    pass


class _WrappedUser(_Delegate, UserSimulator):
    def __init__(self, agent: Any) -> None:
        super().__init__(agent)
        self.reads_by_rule = bool(getattr(agent, "reads_by_rule", False))


def _check_act(agent: Any, role: str) -> None:
    if not callable(getattr(agent, "act", None)):
        raise TypeError(f"the {role} must be an agent with act(...) -> str, got {type(agent).__name__}")


def as_assistant(agent: Any) -> Assistant:
    """``agent`` as an ``Assistant``: itself if it is one, else wrapped (its ``act`` and ``act_batch``)."""
    if isinstance(agent, Assistant):
        return agent
    _check_act(agent, "assistant")
    return _WrappedAssistant(agent)


def as_user(agent: Any) -> UserSimulator:
    """``agent`` as a ``UserSimulator``: itself if it is one, else wrapped (its ``act`` and ``act_batch``)."""
    if isinstance(agent, UserSimulator):
        return agent
    _check_act(agent, "user simulator")
    return _WrappedUser(agent)
