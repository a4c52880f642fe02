"""The scripted user simulator: honest, brief, never states the gold answer."""

from __future__ import annotations

from clarify_env.dialogue import UserRequest
from clarify_env.matching import content_terms, distinguishing_terms, pick_item
from clarify_env.protocol import Action, Move
from clarify_env.reward import contains_answer
from clarify_env.tasks import Task

from agents.base import Agent

UNHELPFUL_REPLY = "I'm not sure what you are asking. I just want an answer to my question."


class ScriptedUser(Agent):
    """Answers an on-topic clarifying question with its interpretation's facet, any other
    question with an unhelpful but honest reply; from a final response takes the answer
    (for MULTI, the item whose label points at its own facet).

    A question is on topic when it mentions a word that tells the interpretations apart
    (in their facets or disambiguated questions) or a word of the task's dimension.
    A reply that would contain a gold answer is replaced and counted in ``leaks_blocked``.
    """

    name = "scripted_user"

    def __init__(self) -> None:
        self.leaks_blocked = 0

    def act(self, request: UserRequest) -> str:
        if request.kind == "clarify":
            return self.reply(request)
        return self.extract(request)

    @staticmethod
    def on_topic(request: UserRequest) -> bool:
        task = request.task
        facets = [i.facet for i in task.interpretations]
        questions = [i.question for i in task.interpretations]
        topic = content_terms(task.dimension or "") | set(task.metadata.get("dimension_words", ()))
        for terms in distinguishing_terms(facets, task.query) + distinguishing_terms(questions, task.query):
            topic |= terms
        return bool(content_terms(request.action.text) & topic)

    def reply(self, request: UserRequest) -> str:
        if not self.on_topic(request):
            return UNHELPFUL_REPLY
        facet = request.interpretation.facet.strip()
        text = facet if facet[-1] in ".!?" else f"I mean {facet}."
        if contains_answer(text, request.interpretation.answers):
            self.leaks_blocked += 1
            return UNHELPFUL_REPLY
        return text

    def extract(self, request: UserRequest) -> str:
        return self.extract_for(request.task, request.interpretation_index, request.action)

    @staticmethod
    def extract_for(task: Task, index: int, action: Action) -> str:
        """The answer a user meaning ``task.interpretations[index]`` takes from a final response.

        Deterministic, so the env can score a final response against every meaning."""
        if action.move is not Move.MULTI:
            return action.text
        facets = [i.facet for i in task.interpretations]
        labels = [item.facet for item in action.items]
        return action.items[pick_item(labels, facets, index, task.query)].answer
