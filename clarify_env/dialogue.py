"""What the environment asks of the user simulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clarify_env.protocol import Action
from clarify_env.tasks import Interpretation, Task


@dataclass(frozen=True)
class UserRequest:
    """One turn the user simulator must play.

    ``kind == "clarify"``: reply to the assistant's clarifying question (``action.text``).
    ``kind == "extract"``: read the assistant's final response (``action``) and return the
    answer that fits the hidden interpretation; the env scores that text.
    The simulator knows the task and its hidden interpretation; ``messages`` is the
    dialogue so far (the assistant's latest message last).
    """

    kind: Literal["clarify", "extract"]
    task: Task
    interpretation_index: int
    messages: tuple[dict[str, str], ...]
    action: Action

    @property
    def interpretation(self) -> Interpretation:
        return self.task.interpretations[self.interpretation_index]
