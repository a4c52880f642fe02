"""The assistant's system prompt: protocol, prices, private context."""

from __future__ import annotations

from clarify_env.costs import Costs
from clarify_env.protocol import protocol_description


def system_prompt(costs: Costs, context: str | None, max_questions: int = 1, unit: str = "word") -> str:
    """What the assistant is told before the dialogue starts (``unit``: what the word price is paid
    per, "word" or "token")."""
    parts = [
        "You answer a user's question. Your score is the accuracy of the answer the user "
        "takes away, minus the price of each clarifying question, minus the price of each "
        f"{unit} of your final response. Choose the move that maximises your expected score.",
        costs.describe(unit),
        f"You may ask at most {max_questions} clarifying question{'s' if max_questions != 1 else ''}.",
        protocol_description(unit),
    ]
    if context:
        parts.append(context)
    return "\n\n".join(parts)
