"""The assistant's system prompt: protocol, prices, private context."""

from __future__ import annotations

from clarify_env.costs import Costs
from clarify_env.protocol import PROTOCOL_DESCRIPTION


def system_prompt(costs: Costs, context: str | None, max_questions: int = 1) -> str:
    """What the assistant is told before the dialogue starts."""
    parts = [
        "You answer a user's question. Your score is the accuracy of the answer the user "
        "takes away, minus the price of each clarifying question, minus the price of each "
        "word of your final response. Choose the move that maximises your expected score.",
        costs.describe(),
        f"You may ask at most {max_questions} clarifying question{'s' if max_questions != 1 else ''}.",
        PROTOCOL_DESCRIPTION,
    ]
    if context:
        parts.append(context)
    return "\n\n".join(parts)
