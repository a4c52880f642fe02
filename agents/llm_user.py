"""The user simulator played by a language model (self-play: the assistant's own model).

The model is told the query and the user's hidden interpretation (the disambiguated
question and its facet), never the gold answer. It answers clarifying questions, and
it extracts the answer that fits its meaning from a MULTI response. Its replies to
clarifying questions pass a leak guard: one that contains a gold answer is replaced.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from agents.base import UserReply, UserSimulator
from agents.generation import Completion, GenerationBackend, SamplingParams
from agents.scripted_user import ScriptedUser, facet_reply
from clarify_env.dialogue import UserRequest
from clarify_env.leak_guard import contains_answer
from clarify_env.protocol import Move

DEFAULT_SAMPLING = SamplingParams(temperature=0.0, max_new_tokens=32, stop=("\n",))  # a user's turn is one line


def _who_you_are(request: UserRequest, asked: str) -> str:
    interp = request.interpretation
    return f'{asked}: "{request.task.query}"\nWhat you really mean: "{interp.question}" (that is, {interp.facet}).\n'


def clarify_conversation(request: UserRequest) -> list[dict[str, str]]:
    """The prompt for replying to the assistant's clarifying question."""
    system = _who_you_are(request, "You are a user who asked an assistant") + (
        "The assistant asks you a clarifying question. Reply in one short sentence that says "
        "what you mean. You do not know the answer to your question: never guess it."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": request.action.text}]


def extract_conversation(request: UserRequest) -> list[dict[str, str]]:
    """The prompt for taking one's own answer from the assistant's enumeration."""
    system = _who_you_are(request, "You asked an assistant") + (
        "The assistant answered several meanings. Reply with only the answer for your meaning, "
        "copied from the response, and nothing else."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": request.action.text}]


class LLMUser(UserSimulator):
    """A user simulator that generates its turns with a language model.

    One backend call per ``act_batch`` (or ``reply_batch``) covers every request that
    needs the model: replies to clarifying questions and extractions from MULTI
    responses; the answer of an ANSWER move is taken as is. A reply that contains a
    gold answer of the user's interpretation (``clarify_env.leak_guard``: disguises included) is
    replaced by the scripted user's reply, ``"I mean <facet>."`` (or, if that would leak too,
    its unhelpful reply), and counted in ``leaks_blocked``. An empty extraction falls back to the scripted extraction.
    """

    name = "llm_user"

    def __init__(
        self, backend: GenerationBackend, sampling: SamplingParams | None = None, adapter: str | None = None
    ) -> None:
        sampling = sampling or DEFAULT_SAMPLING
        if sampling.n != 1:
            raise ValueError(f"LLMUser samples one reply per request: sampling.n must be 1, got {sampling.n}")
        self.backend = backend
        self.sampling = sampling
        self.adapter = adapter
        self.leaks_blocked = 0

    def reply_batch(self, requests: Sequence[UserRequest], seeds: Sequence[int] | None = None) -> list[UserReply]:
        """The user's turn for each request, in order, from one backend call (``seeds``: one
        per request, see ``GenerationBackend.generate``)."""
        asks = [i for i, r in enumerate(requests) if r.kind == "clarify" or r.action.move is Move.MULTI]
        conversations = [
            clarify_conversation(requests[i]) if requests[i].kind == "clarify" else extract_conversation(requests[i])
            for i in asks
        ]
        ask_seeds = None if seeds is None else [seeds[i] for i in asks]
        outputs = self.backend.generate(conversations, self.sampling, self.adapter, seeds=ask_seeds) if asks else []
        completions = {i: replace(out[0], text=out[0].text.strip()) for i, out in zip(asks, outputs)}
        replies = []
        for i, request in enumerate(requests):
            if i not in completions:
                replies.append(UserReply(request.action.text, "direct"))
            elif request.kind == "clarify":
                replies.append(self._guarded(request, completions[i]))
            elif completions[i].text:
                replies.append(UserReply(completions[i].text, "model", completions[i]))
            else:
                scripted = ScriptedUser.extract(request)
                replies.append(UserReply(scripted, "fallback", completions[i]))
        return replies

    def act_batch(self, requests: Sequence[UserRequest]) -> list[str]:
        return [r.text for r in self.reply_batch(requests)]

    def _guarded(self, request: UserRequest, completion: Completion) -> UserReply:
        golds = request.interpretation.answers
        if completion.text and not contains_answer(completion.text, golds):
            return UserReply(completion.text, "model", completion)
        if completion.text:
            self.leaks_blocked += 1
        return UserReply(facet_reply(request), "guard" if completion.text else "fallback", completion)
