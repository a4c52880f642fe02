"""The scripted user simulator: honest, brief, never states the gold answer."""

from __future__ import annotations

from agents.base import UserSimulator
from clarify_env.dialogue import UserRequest
from clarify_env.matching import content_terms, distinguishing_terms, guarded_naming_reply, holds_in_full
from clarify_env.scoring import taken_away

UNHELPFUL_REPLY = "I'm not sure what you are asking. I just want an answer to my question."


def facet_reply(request: UserRequest) -> str:
    """The user naming its own meaning by its facet (``"I mean <facet>."``), or the unhelpful reply
    where even that would state a gold answer."""
    text = guarded_naming_reply(request.interpretation.facet, request.interpretation.answers)
    return UNHELPFUL_REPLY if text is None else text


class ScriptedUser(UserSimulator):
    """Answers an on-topic clarifying question with its interpretation's facet, any other
    question with an unhelpful but honest reply; reads a final response by the scoring rule
    (``clarify_env.scoring.taken_away``: for MULTI, the item whose label points at its own facet).

    A question is on topic when it names a facet in full, or mentions a word that tells the
    interpretations apart (in their facets or disambiguated questions) or a word of the task's
    dimension.
    A reply that would contain a gold answer is replaced and counted in ``leaks_blocked``.
    """

    name = "scripted_user"
    reads_by_rule = True

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
        if any(holds_in_full(request.action.text, facet) for facet in facets):
            return True
        questions = [i.question for i in task.interpretations]
        topic = content_terms(task.dimension or "") | set(task.metadata.get("dimension_words", ()))
        for terms in distinguishing_terms(facets, task.query) + distinguishing_terms(questions, task.query):
            topic |= terms
        return bool(content_terms(request.action.text) & topic)

    def reply(self, request: UserRequest) -> str:
        if not self.on_topic(request):
            return UNHELPFUL_REPLY
        text = facet_reply(request)
        self.leaks_blocked += text == UNHELPFUL_REPLY
        return text

    @staticmethod
    def extract(request: UserRequest) -> str:
        """The answer this user takes from the final response (``scoring.taken_away``)."""
        facets = [i.facet for i in request.task.interpretations]
        return taken_away(request.action, facets, request.interpretation_index, request.task.query)
