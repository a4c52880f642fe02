"""The text-generation interface shared by the transformers and vLLM backends.

A backend turns chat conversations into sampled completions. Both backends render
prompts the same way (``render_chat``: the tokenizer's chat template with
``add_generation_prompt`` and the model's ``chat_template_kwargs``) and cut completions at
stop strings the same way, so they are interchangeable. SFT renders its training text with
the same function, so a model is trained on exactly the text it generates from.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

Conversation = Sequence[Mapping[str, str]]


def merge_system(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with a leading system message folded into the first user message
    (``system + "\n\n" + user``), or turned into a user message when no user message follows."""
    out = [dict(m) for m in messages]
    if not out or out[0]["role"] != "system":
        return out
    system = out.pop(0)
    if out and out[0]["role"] == "user":
        out[0]["content"] = f"{system['content']}\n\n{out[0]['content']}"
    else:
        out.insert(0, {**system, "role": "user"})
    return out


def render_chat(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = False,
    template_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """``messages`` rendered by the tokenizer's chat template, with ``template_kwargs`` passed
    to it (Qwen3: ``{"enable_thinking": False}``). A template that rejects system messages
    (Gemma-2 raises "System role not supported") gets the system text at the top of the first
    user turn instead, the way those models are prompted."""
    kwargs = dict(template_kwargs or {})
    try:
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )
    except Exception as err:  # jinja2's TemplateError from the template's raise_exception(...)
        if not messages or messages[0]["role"] != "system" or "system" not in str(err).lower():
            raise
    return tokenizer.apply_chat_template(
        merge_system(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
    )


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: ``temperature == 0`` means greedy; ``n`` completions per prompt.

    Generation stops at the end-of-turn token, at the first of the ``stop`` strings
    (which is cut from the text), or after ``max_new_tokens``. A ``seed`` makes the
    samples reproducible.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"need n >= 1 and max_new_tokens >= 1, got {self.n}, {self.max_new_tokens}")


@dataclass(frozen=True)
class Completion:
    """One sampled completion.

    ``text`` excludes special tokens and everything from the first stop string on;
    ``token_ids`` are the generated tokens up to the one that ended generation
    (end-of-turn token included, padding excluded); ``finish_reason`` is ``"stop"``
    (end-of-turn token or stop string) or ``"length"``.
    """

    text: str
    token_ids: tuple[int, ...]
    prompt_token_ids: tuple[int, ...]
    finish_reason: str


@dataclass
class Usage:
    """What a backend has generated: requests sent to a server and answered from its cache,
    prompt and completion tokens, and money (a served model with prices)."""

    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def add(self, **counts: float) -> None:
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value)

    def count(self, outputs: Sequence[Sequence[Completion]]) -> None:
        """Count the tokens of a ``generate`` call's outputs (each prompt once)."""
        for out in outputs:
            self.add(
                prompt_tokens=len(out[0].prompt_token_ids) if out else 0,
                completion_tokens=sum(len(c.token_ids) for c in out),
            )

    def since(self, before: Usage) -> Usage:
        return Usage(**{k: getattr(self, k) - getattr(before, k) for k in self.__dataclass_fields__})


class GenerationBackend(ABC):
    """Generates completions for chat conversations, optionally under a LoRA adapter."""

    @property
    def usage(self) -> Usage:
        """What this backend has generated so far (``Usage``)."""
        if "_usage" not in self.__dict__:
            self._usage = Usage()
        return self._usage

    tokenizer: Any  # a Hugging Face tokenizer with a chat template
    adapters: Mapping[str, Any]  # the registered adapters by name
    chat_template_kwargs: Mapping[str, Any] = {}  # passed to the chat template (``render_chat``)

    @abstractmethod
    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: str | None = None,
        seeds: Sequence[int] | None = None,
        prefixes: Sequence[str] | None = None,
    ) -> list[list[Completion]]:
        """``sampling.n`` completions for each conversation, in order.

        Each conversation is a list of ``{"role": "system"|"user"|"assistant", "content": str}``
        messages; ``adapter`` names an adapter registered with ``add_adapter`` (None: base model).
        ``seeds`` (one per conversation) make each conversation's samples depend on its own
        seed alone, not on what else is in the batch: a resumed run re-draws the same samples.
        ``prefixes`` (one per conversation, "" for none) are forced openings of the
        assistant's message: the model continues them, and each completion's text and
        token ids start with them (``render_prefixed``).
        """

    @abstractmethod
    def add_adapter(self, name: str, path: str | Path) -> None:
        """Register the peft LoRA adapter saved in directory ``path`` under ``name``."""

    def close(self) -> None:  # noqa: B027 (optional: most backends hold nothing to free)
        """Free what the backend holds beyond its Python objects (an engine's processes); the
        default has nothing to free."""

    def check_request(
        self,
        conversations: Sequence[Conversation],
        adapter: str | None,
        seeds: Sequence[int] | None,
        prefixes: Sequence[str] | None = None,
    ) -> None:
        """Refuse an adapter that was never registered, or a seed or prefix count that is not one
        per conversation."""
        if adapter is not None and adapter not in self.adapters:
            raise KeyError(f"unknown adapter {adapter!r}; registered: {sorted(self.adapters)}")
        if seeds is not None and len(seeds) != len(conversations):
            raise ValueError(
                f"need one seed per conversation: {len(seeds)} seeds for {len(conversations)} conversations"
            )
        if prefixes is not None and len(prefixes) != len(conversations):
            raise ValueError(
                f"need one prefix per conversation: {len(prefixes)} prefixes for {len(conversations)} conversations"
            )

    def render(self, conversations: Sequence[Conversation]) -> list[list[int]]:
        """The prompt token ids of each conversation, ready for the assistant's turn."""
        return [self._ids(t) for t in self._prompt_texts(conversations)]

    def _prompt_texts(self, conversations: Sequence[Conversation]) -> list[str]:
        return [render_chat(self.tokenizer, c, True, self.chat_template_kwargs) for c in conversations]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def render_prefixed(
        self, conversations: Sequence[Conversation], prefixes: Sequence[str] | None
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Each conversation's prompt ids with its prefix's tokens appended, and those tokens.

        The prefix is tokenized together with the prompt (as SFT tokenizes the whole
        dialogue); a prefix whose first token would merge with the end of the prompt is
        refused, since the model would then continue a text it was never shown.
        """
        texts = self._prompt_texts(conversations)
        prompts = [self._ids(t) for t in texts]
        if prefixes is None or not any(prefixes):
            return prompts, [[] for _ in prompts]
        rows, heads = [], []
        for text, prompt, prefix in zip(texts, prompts, prefixes):
            if not prefix:
                rows.append(prompt)
                heads.append([])
                continue
            ids = self._ids(text + prefix)
            if ids[: len(prompt)] != prompt:
                raise ValueError(f"prefix {prefix!r} merges with the end of the prompt when tokenized")
            rows.append(ids)
            heads.append(ids[len(prompt) :])
        return rows, heads

    def prefixed(self, completion: Completion, head: Sequence[int], stop: Sequence[str]) -> Completion:
        """``completion`` (of a prompt that ended with the forced tokens ``head``) with those
        tokens and their text put back at its start."""
        if not head:
            return completion
        ids = (*head, *completion.token_ids)
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        opening = self.tokenizer.decode(list(head), skip_special_tokens=True)
        body, _ = cut_at_stop(text[len(opening) :], stop)
        prompt = completion.prompt_token_ids[: len(completion.prompt_token_ids) - len(head)]
        return Completion(text[: len(opening)] + body, ids, prompt, completion.finish_reason)


def sample_seed(seed: int, sample: int) -> int:
    """The seed of sample ``sample`` (of ``n``) of a conversation seeded ``seed``."""
    return seed if sample == 0 else (seed * 1_000_003 + sample) % 2**63


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the earliest stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
