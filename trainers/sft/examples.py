"""Training examples from episodes: the chat as the model sees it, with loss on the assistant's
own turns only (system prompt, user turns and template scaffolding are masked), each turn's
end-of-turn token included so that the model learns to stop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from agents.generation import render_chat
from trainers.episodes import Episode

IGNORE = -100
_PROBE = "<<sft-probe>>"  # an assistant message rendered to read the template's end-of-turn text


@dataclass(frozen=True)
class SFTExample:
    """One tokenised episode; ``labels`` is ``input_ids`` with every non-assistant token set to -100.
    ``move_weight``, when set, replaces ``move_tag_weight`` as the loss weight of the first
    labelled token (the first assistant turn's move tag; 0 leaves the move untaught).
    ``followup_weight`` is the loss weight of the tokens after the tag in every assistant turn
    after the episode's first (the response to a clarification); ``first_turn`` is the index,
    among the episode's assistant turns, of the example's first labelled turn (0 unless the
    episode was split one example per turn)."""

    episode_id: str
    input_ids: list[int]
    labels: list[int]
    move_weight: float | None = None
    followup_weight: float = 1.0
    first_turn: int = 0


class NotIncremental(ValueError):
    """The chat template renders an earlier assistant turn differently once later turns follow
    (Qwen3 with ``enable_thinking=False`` drops the empty thought of past turns), so the whole
    chat is not the prompt of each turn followed by the turn."""


def _renderer(tokenizer: Any, template_kwargs: Mapping[str, Any] | None) -> Callable[..., str]:
    def render(messages: Sequence[dict[str, str]], generation_prompt: bool = False) -> str:
        return render_chat(tokenizer, messages, generation_prompt, template_kwargs)

    return render


def _end_of_turn(render: Callable[..., str], history: Sequence[dict[str, str]]) -> str:
    """The text the template puts after an assistant message (``<|im_end|>``, ``<|end|>``, ...)."""
    probe = render([*history, {"role": "assistant", "content": _PROBE}])
    return probe[probe.index(_PROBE) + len(_PROBE) :].rstrip()


def _policy_turns(chat: Sequence[dict[str, str]]) -> list[int]:
    return [i for i, m in enumerate(chat) if m["role"] == "assistant" and not m.get("example")]


def assistant_spans(
    chat: Sequence[dict[str, str]], tokenizer: Any, template_kwargs: Mapping[str, Any] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The chat rendered by the tokenizer's template (``render_chat``, as the backends render
    prompts, with the model's ``template_kwargs``), and the character span of each assistant
    turn (worked-example turns, marked ``"example": True``, are not the policy's and get none).

    A turn's span starts where the generation prompt ends (what the model saw when it
    wrote the turn) and ends after the template's end-of-turn text (``<|im_end|>``,
    ``<|end|>``, ...), without trailing whitespace. Raises ``NotIncremental`` when the
    template does not render the chat incrementally, ``ValueError`` when a turn is not
    followed by the end-of-turn text.
    """
    render = _renderer(tokenizer, template_kwargs)
    text = render(chat)
    spans = []
    for i in _policy_turns(chat):
        prompt = render(chat[:i], generation_prompt=True)
        if not text.startswith(prompt):
            raise NotIncremental(
                f"the chat template does not render message {i} incrementally: the prompt for it is not a "
                "prefix of the whole chat, so the assistant's tokens cannot be told apart"
            )
        end_of_turn = _end_of_turn(render, chat[:i])
        content_at = text.find(chat[i]["content"], len(prompt))
        end = content_at + len(chat[i]["content"])
        if content_at < 0 or not text.startswith(end_of_turn, end):
            raise ValueError(f"assistant message {i} is not followed by the end-of-turn text {end_of_turn!r}")
        spans.append((len(prompt), end + len(end_of_turn)))
    return text, spans


def training_texts(
    chat: Sequence[dict[str, str]], tokenizer: Any, template_kwargs: Mapping[str, Any] | None = None
) -> list[tuple[str, list[tuple[int, int]]]]:
    """The texts to train on for one chat, each with its labelled character spans: the whole
    chat (``assistant_spans``) when the template renders it incrementally, else one text per
    assistant turn — the prompt the model generated it from, the turn, the end-of-turn text."""
    try:
        return [assistant_spans(chat, tokenizer, template_kwargs)]
    except NotIncremental:
        pass
    render, texts = _renderer(tokenizer, template_kwargs), []
    for i in _policy_turns(chat):
        prompt = render(chat[:i], generation_prompt=True)
        text = prompt + chat[i]["content"] + _end_of_turn(render, chat[:i])
        texts.append((text, [(len(prompt), len(text))]))
    return texts


def _episode_examples(
    episode: Episode,
    tokenizer: Any,
    max_length: int,
    template_kwargs: Mapping[str, Any] | None,
    move_weight: float | None,
    followup_weight: float = 1.0,
) -> list[SFTExample]:
    """One episode's examples (none when it is longer than ``max_length`` tokens)."""
    if not any(m["role"] == "assistant" for m in episode.chat):
        raise ValueError(f"episode {episode.episode_id} has no assistant message in its chat")
    texts = training_texts(episode.chat, tokenizer, template_kwargs)
    encoded = [tokenizer(text, add_special_tokens=False, return_offsets_mapping=True) for text, _ in texts]
    if any(len(e["input_ids"]) > max_length for e in encoded):
        return []
    examples = []
    for k, ((_, spans), enc) in enumerate(zip(texts, encoded)):
        labels = [
            token if any(start <= first < end for start, end in spans) else IGNORE
            for token, (first, _) in zip(enc["input_ids"], enc["offset_mapping"])
        ]
        name = episode.episode_id if len(texts) == 1 else f"{episode.episode_id}/turn-{k + 1}"
        examples.append(SFTExample(name, enc["input_ids"], labels, move_weight if k == 0 else None, followup_weight, k))
    return examples


def build_sft_examples(
    episodes: Sequence[Episode],
    tokenizer: Any,
    max_length: int,
    template_kwargs: Mapping[str, Any] | None = None,
    move_weights: Sequence[float | None] | None = None,
    followup_weight: float = 1.0,
) -> list[SFTExample]:
    """Tokenise each episode's ``chat`` (``template_kwargs`` go to the chat template); only the
    assistant's turns carry labels. One example per episode, or one per assistant turn
    (ids ``<episode>/turn-<k>``) where the template is not incremental (``training_texts``).
    ``move_weights`` (one per episode, None for the default) set the loss weight of each
    episode's first move tag (``SFTExample.move_weight``); ``followup_weight`` that of the
    responses after a clarification (``SFTExample.followup_weight``). An episode listed
    several times (copies of the kept episodes) is tokenised once.

    Episodes longer than ``max_length`` tokens are dropped (truncation would cut the
    final turn or the prompt it answers); ``ValueError`` if that leaves none.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("build_sft_examples needs a fast tokenizer (character offsets locate the assistant's tokens)")
    if move_weights is not None and len(move_weights) != len(episodes):
        raise ValueError(f"move_weights: {len(move_weights)} for {len(episodes)} episodes")
    examples, too_long = [], 0
    made: dict[tuple[int, float | None], list[SFTExample]] = {}
    for n, episode in enumerate(episodes):
        weight = move_weights[n] if move_weights is not None else None
        key = (id(episode), weight)
        if key not in made:
            made[key] = _episode_examples(episode, tokenizer, max_length, template_kwargs, weight, followup_weight)
        examples += made[key]
        too_long += not made[key]
    if not examples:
        raise ValueError(f"no SFT examples: all {too_long} episodes are longer than max_length={max_length} tokens")
    if too_long:
        print(f"[sft] dropped {too_long} of {len(episodes)} episodes longer than max_length={max_length} tokens")
    return examples


def label_weights(
    labels: Sequence[int],
    move_tag_weight: float,
    move_weight: float | None = None,
    followup_weight: float = 1.0,
    first_turn: int = 0,
) -> list[float]:
    """Each token's loss weight: 0 where unlabelled, ``move_tag_weight`` on the first labelled
    token of each assistant turn (its move tag), 1 on the rest of the turn — ``followup_weight``
    in every turn after the episode's first (the labelled runs are the turns, the first of them
    turn ``first_turn``); ``move_weight`` (if not None) on the very first labelled token instead."""
    weights, turn = [], first_turn - 1
    for i, label in enumerate(labels):
        opens = label != IGNORE and (i == 0 or labels[i - 1] == IGNORE)
        turn += opens
        rest = followup_weight if turn >= 1 else 1.0
        weights.append(0.0 if label == IGNORE else move_tag_weight if opens else rest)
    if move_weight is not None:
        first = next((i for i, label in enumerate(labels) if label != IGNORE), None)
        if first is not None:
            weights[first] = move_weight
    return weights


def example_weights(example: SFTExample, move_tag_weight: float) -> list[float]:
    """``label_weights`` of one example (its own ``move_weight`` included)."""
    return label_weights(
        example.labels, move_tag_weight, example.move_weight, example.followup_weight, example.first_turn
    )


def label_tokens(example: SFTExample) -> int:
    """The example's labelled tokens the loss counts (the first token predicts nothing)."""
    return sum(1 for label in example.labels[1:] if label != IGNORE)
