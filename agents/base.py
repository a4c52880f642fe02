"""The agent interface: one call for a single observation, one for a batch."""

from __future__ import annotations

from abc import ABC
from typing import Any, Sequence


class Agent(ABC):
    """Maps an observation to a message.

    Assistant agents receive the env's observation dict; user agents receive a
    ``clarify_env.dialogue.UserRequest``. Subclasses override ``act`` (scripted agents) or
    ``act_batch`` (LLM agents, which batch generation); each default calls the other.
    """

    name: str = "agent"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.act is Agent.act and cls.act_batch is Agent.act_batch and not getattr(cls, "__abstractmethods__", None):
            raise TypeError(f"{cls.__name__} must override act or act_batch")

    def act(self, observation: Any) -> str:
        """The message for one observation."""
        return self.act_batch([observation])[0]

    def act_batch(self, observations: Sequence[Any]) -> list[str]:
        """The messages for a batch of observations, in order."""
        return [self.act(o) for o in observations]
