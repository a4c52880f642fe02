"""The assistant played by a language model through a ``GenerationBackend``.

Two prompt styles:

- ``"full"``: the system prompt is the env's own (``observation["system"]``: the task,
  the protocol, the prices in words, the open-book context);
- ``"compact"``: a short deterministic text for tiny models, one fact a line::

      question price 0.237
      word price 0.0123
      62% 1987 series: Varo Melkin
      38% 2012 series: Dessa Quorn

  (the prices with the env's fixed decimals, then one line per meaning of the context,
  likeliest first: its share of users, then ``facet: answer`` exactly as a MULTI item
  writes it, so that the messages a model learns are copies of spans of its prompt; no
  meaning line for a closed-book task). The tiny tokenizer keeps every digit its own
  token, so the prices stay legible. Likeliest first turns "which meaning is most
  likely?" from comparing digit strings across lines into "the first line": a small
  model then learns a guess by copying, the way it learns an enumeration.

  With ``reply_lookup``, each reply of the user to a clarifying question is followed, in
  the assistant's view of that turn, by the meaning line its words single out (the facet
  matcher the scripted agents use, ``matching.best_match``; nothing when no line is singled
  out)::

      I mean 2012 series.
      2012 series: Dessa Quorn

  This is retrieval in the prompt, not the model's reading: a tiny model trained on CPU
  learns to copy from its prompt in a few hundred steps but not, in thousands of steps, to
  find the line a reply names (BENCHMARKS.md, "Why ReST stalls"). Every move is still the
  model's choice; only the lookup after a clarification is done for it.

``few_shot=k`` shows k worked examples (oracle dialogues on synthetic tasks, the same k
for every call: ``few_shot_demos``), in one of two formats:

- ``"system"``: appended to the system prompt as text ("Example 1", its prices and
  meanings, then ``User: ...`` / ``Assistant: ...`` lines);
- ``"turns"``: as earlier user/assistant exchanges of the chat, with no system message;
  each dialogue's first user message (the examples' and the real one) starts with its
  own prompt text (full or compact). Small instruct models such as SmolLM2-135M copy
  the move tags from earlier assistant turns but ignore examples in the system prompt.
  The episode's ``chat`` then holds the example turns too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from agents.base import Assistant
from agents.generation import Completion, GenerationBackend, SamplingParams
from clarify_env.context import ContextEntry, parse_context
from clarify_env.costs import QUESTION_DECIMALS, WORD_DECIMALS, Costs, format_price, make_cost_sampler
from clarify_env.matching import best_match
from clarify_env.prompt import system_prompt
from clarify_env.protocol import MOVES, parse_action
from clarify_env.scoring import Rules

PromptStyle = Literal["full", "compact"]
PROMPT_STYLES = ("full", "compact")
FewShotFormat = Literal["system", "turns"]
FEW_SHOT_FORMATS = ("system", "turns")
EXAMPLE_SEED = 20_240_601  # the few-shot examples' tasks and prices come from this seed alone


def compact_system(costs: Costs, context: str | None, unit: str = "word") -> str:
    """The ``"compact"`` system text: the two price lines (with the env's fixed decimals), then
    the meaning lines of the context, likeliest first (ties keep the context's order)."""
    lines = [
        f"question price {format_price(costs.question, QUESTION_DECIMALS)}",
        f"{unit} price {format_price(costs.word, WORD_DECIMALS)}",
    ]
    entries = sorted(parse_context(context), key=lambda e: -e.share)
    lines += [f"{e.share * 100:g}% {e.facet}: {e.answer}" for e in entries]
    return "\n".join(lines) + "\n"


def with_reply_lookup(turns: list[dict[str, Any]], context: str | None) -> list[dict[str, Any]]:
    """The dialogue with every user reply after the first user turn followed by the meaning
    line (``facet: answer``) its words single out, where one is (see the module docstring)."""
    entries: list[ContextEntry] = parse_context(context)
    users = [i for i, t in enumerate(turns) if t["role"] == "user"]
    if len(entries) < 2 or len(users) < 2:
        return turns
    query = turns[users[0]]["content"]
    facets = [e.facet for e in entries]
    out = [dict(t) for t in turns]
    for i in users[1:]:
        k = best_match(out[i]["content"], facets, query)
        if k is not None:
            out[i]["content"] = f"{out[i]['content']}\n{entries[k].facet}: {entries[k].answer}"
    return out


@dataclass(frozen=True)
class Demo:
    """A worked example: an oracle dialogue with the scripted user, and what its assistant saw."""

    costs: Costs
    context: str | None
    messages: tuple[dict[str, str], ...]


@functools.lru_cache(maxsize=16)
def few_shot_demos(k: int, rules: Rules = Rules()) -> tuple[Demo, ...]:
    """k oracle dialogues on ambiguous synthetic tasks, the same k for every call.

    Tasks and prices are drawn from ``EXAMPLE_SEED``; the first moves cycle through
    ANSWER, MULTI, CLARIFY so that every move is shown.
    """
    from agents.baselines import OraclePolicy
    from clarify_env.env import ClarifyEnv

    env = ClarifyEnv(source="synthetic", costs="default:train", rules=rules)
    oracle = OraclePolicy(rules)
    rng = np.random.default_rng(EXAMPLE_SEED)
    sampler = make_cost_sampler("default:train")
    demos = []
    for i in range(k):
        wanted = MOVES[i % len(MOVES)]
        for _ in range(10_000):
            task, costs = env.source.sample(rng), sampler.sample(rng)
            obs, _ = env.reset(seed=int(rng.integers(2**31)), options={"task": task, "costs": costs})
            first = oracle.act(obs)
            if task.is_ambiguous and parse_action(first).move is wanted:
                break
        else:
            raise RuntimeError(f"found no synthetic example whose oracle move is {wanted.value}")
        obs, *_ = env.step(first)
        while not env.done:
            obs, *_ = env.step(oracle.act(obs))
        demos.append(Demo(costs, task.context, tuple(dict(m) for m in env.messages)))
    return tuple(demos)


def _with_header(header: str, messages: Sequence[Mapping[str, str]], example: bool = False) -> list[dict[str, Any]]:
    """The dialogue with ``header`` on top of its first (user) message. Turns of a worked
    example carry ``"example": True`` (templates ignore it; SFT does not train on them)."""
    turns: list[dict[str, Any]] = [{"role": m["role"], "content": m["content"]} for m in messages]
    turns[0]["content"] = f"{header.rstrip()}\n{turns[0]['content']}"
    if example:
        for t in turns:
            t["example"] = True
    return turns


class LLMAssistant(Assistant):
    """An assistant agent that generates its messages with a language model.

    Args:
        backend: generates completions (``TransformersBackend``, ``VLLMBackend``...).
        sampling: decoding settings (``n`` must be 1: one message per observation).
        adapter: a LoRA adapter registered with the backend (None: the base model).
        prompt_style: ``"full"`` or ``"compact"`` (see the module docstring).
        few_shot: worked examples shown before the dialogue (``few_shot_demos``).
        few_shot_format: ``"system"`` or ``"turns"`` (see the module docstring).
        rules: the env's rules (the full-style prompt and worked examples state the question limit).
        reply_lookup: compact style only: each reply to a clarifying question is followed by
            the meaning line it names (``with_reply_lookup``).
        name: the policy's name in episode records (default: the adapter's, else "llm_assistant").
    """

    forces_prefixes = True

    def __init__(
        self,
        backend: GenerationBackend | None,
        sampling: SamplingParams | None = None,
        adapter: str | None = None,
        prompt_style: PromptStyle = "full",
        few_shot: int = 0,
        few_shot_format: FewShotFormat = "system",
        rules: Rules = Rules(),
        name: str | None = None,
        reply_lookup: bool = False,
    ) -> None:
        sampling = sampling or SamplingParams()
        if sampling.n != 1:
            raise ValueError(
                f"LLMAssistant samples one message per observation: sampling.n must be 1, got {sampling.n}"
            )
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
        if few_shot_format not in FEW_SHOT_FORMATS:
            raise ValueError(f"few_shot_format must be one of {FEW_SHOT_FORMATS}, got {few_shot_format!r}")
        if few_shot < 0:
            raise ValueError(f"few_shot must be >= 0, got {few_shot}")
        self.backend = backend
        self.sampling = sampling
        self.adapter = adapter
        self.prompt_style = prompt_style
        self.few_shot = few_shot
        self.few_shot_format = few_shot_format
        self.rules = rules
        self.reply_lookup = reply_lookup and prompt_style == "compact"
        self.name = name or adapter or "llm_assistant"

    def header(self, costs: Costs, context: str | None, system: str | None = None) -> str:
        """What the assistant is told about one task: the env's system prompt (``system``, or
        rebuilt from the prices and context) in the full style, the compact text otherwise."""
        if self.prompt_style == "compact":
            return compact_system(costs, context, self.rules.unit)
        return (
            system if system is not None else system_prompt(costs, context, self.rules.max_questions, self.rules.unit)
        )

    def conversation(self, observation: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat the model continues: the prompt, then the dialogue so far."""
        costs = Costs.from_array(observation["costs"])
        header = self.header(costs, observation["context"] or None, observation["system"])
        demos = few_shot_demos(self.few_shot, self.rules) if self.few_shot else ()
        dialogue = self._looked_up(observation["messages"], observation["context"] or None)
        if self.few_shot_format == "turns":
            turns = []
            for d in demos:
                turns += _with_header(self.header(d.costs, d.context), self._looked_up(d.messages, d.context), True)
            return turns + _with_header(header, dialogue)
        if demos:
            header = f"{header.rstrip()}\n\n{self._demo_text(demos)}\n"
        return [{"role": "system", "content": header}, *dialogue]

    def _looked_up(self, messages: Sequence[Mapping[str, Any]], context: str | None) -> list[dict[str, Any]]:
        turns = [{"role": m["role"], "content": m["content"]} for m in messages]
        return with_reply_lookup(turns, context) if self.reply_lookup else turns

    def _demo_text(self, demos: Sequence[Demo]) -> str:
        blocks = []
        for i, d in enumerate(demos, 1):
            header = (
                compact_system(d.costs, d.context)
                if self.prompt_style == "compact"
                else (f"{d.costs.describe()}\n{d.context}\n")
            )
            turns = "\n".join(
                f"{m['role'].capitalize()}: {m['content']}" for m in self._looked_up(d.messages, d.context)
            )
            blocks.append(f"Example {i}\n{header}{turns}")
        return "\n\n".join(blocks)

    def generate_batch(
        self,
        observations: Sequence[Mapping[str, Any]],
        seeds: Sequence[int] | None = None,
        prefixes: Sequence[str] | None = None,
    ) -> list[Completion]:
        """One completion per observation, from one backend call; texts are whitespace-stripped.
        ``seeds`` (one per observation) make each sample independent of the rest of the batch;
        ``prefixes`` (one per observation, "" for none) force the opening of each message
        (e.g. a move tag, ``"CLARIFY:"``), which the model then continues."""
        if not observations:
            return []
        conversations = [self.conversation(o) for o in observations]
        extra = {} if prefixes is None else {"prefixes": prefixes}
        outputs = self.backend.generate(conversations, self.sampling, self.adapter, seeds=seeds, **extra)
        return [replace(out[0], text=out[0].text.strip()) for out in outputs]

    def act_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[str]:
        return [c.text for c in self.generate_batch(observations)]


class ForcedOpening(Assistant):
    """An assistant whose first message opens with a fixed move tag (``"ANSWER"``, ``"MULTI"`` or
    ``"CLARIFY"``), which it then continues: the same model forced to each move, a fair baseline
    that separates choosing the move by its prices from carrying it out."""

    forces_prefixes = True

    def __init__(self, assistant: Assistant, move: str) -> None:
        if move not in {m.value for m in MOVES}:
            raise ValueError(f"move must be ANSWER, MULTI or CLARIFY, got {move!r}")
        if not assistant.forces_prefixes:
            raise ValueError(f"assistant {assistant.name!r} cannot force the opening of its messages")
        self.assistant, self.move = assistant, move
        self.name = f"{assistant.name}+{move.lower()}"

    def generate_batch(
        self,
        observations: Sequence[Mapping[str, Any]],
        seeds: Sequence[int] | None = None,
        prefixes: Sequence[str] | None = None,
    ) -> list[Completion]:
        first = [not any(m["role"] == "assistant" for m in o["messages"]) for o in observations]
        forced = [
            f"{self.move}:" if f else (p if prefixes else "") for f, p in zip(first, prefixes or [""] * len(first))
        ]
        return self.assistant.generate_batch(observations, seeds=seeds, prefixes=forced)

    def act_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[str]:
        return [c.text for c in self.generate_batch(observations)]

    def conversation(self, observation: Mapping[str, Any]) -> list[dict[str, str]]:
        return self.assistant.conversation(observation)
