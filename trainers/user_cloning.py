"""The user simulator's own adapter: the base model cloned on the training tasks' user turns.

The ClarifyingQA paper fine-tuned its user simulator on the human clarifications; this does the
same for the self-play user. For every training task and every one of its meanings, two chats in
the LLM user's own prompt format (``agents.llm_user``): the reply to a clarifying question (the
task's human clarifying question where it has one, the scripted one otherwise) whose target is
the scripted user's reply (for ClarifyingQA: the human clarification), and the reading of a full
MULTI enumeration whose target is the answer the scoring rule hands this meaning. The prices play
no part: the user is cost-blind by construction.
"""

from __future__ import annotations

from typing import Iterable

from agents.llm_user import clarify_conversation, extract_conversation
from agents.scripted_user import ScriptedUser, facet_reply
from clarify_env.dialogue import UserRequest
from clarify_env.oracle import clarifying_question
from clarify_env.protocol import Action, multi, parse_action
from clarify_env.tasks import Task
from trainers.episodes import Episode


def user_requests(task: Task) -> list[UserRequest]:
    """The clarify and extract turns of each of ``task``'s meanings (none for a one-meaning task)."""
    meanings = task.interpretations
    if len(meanings) < 2:
        return []
    question = task.metadata.get("clarifying_question") or clarifying_question([m.facet for m in meanings])
    turns = [("clarify", f"CLARIFY: {question}"), ("extract", multi([(m.facet, m.answers[0]) for m in meanings]))]
    requests = []
    for k in range(len(meanings)):
        for kind, message in turns:
            action = parse_action(message)
            if not isinstance(action, Action):
                raise ValueError(
                    f"task {task.id}: the scripted {kind} turn {message!r} does not parse: {action.reason}"
                )
            messages = ({"role": "user", "content": task.query}, {"role": "assistant", "content": message})
            requests.append(UserRequest(kind, task, k, messages, action))  # type: ignore[arg-type]
    return requests


def user_target(request: UserRequest) -> str:
    """What the cloned user learns to say: the scripted user's turn (``facet_reply``, ``extract``)."""
    return facet_reply(request) if request.kind == "clarify" else ScriptedUser.extract(request)


def user_chats(tasks: Iterable[Task]) -> list[Episode]:
    """The user's training chats as episodes (``chat``: the LLM user's prompt, then its turn as the
    assistant message SFT trains on), in task order."""
    chats = []
    for task in tasks:
        for request in user_requests(task):
            prompt = clarify_conversation(request) if request.kind == "clarify" else extract_conversation(request)
            chat = [*prompt, {"role": "assistant", "content": user_target(request)}]
            name = f"user/{task.id}/{request.interpretation_index}/{request.kind}"
            chats.append(
                Episode(name, name, 0, task.id, request.interpretation_index, {}, [], chat, [], 0, 0, {}, "", "user")
            )
    return chats
