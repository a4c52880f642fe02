"""Supervised fine-tuning on episodes: the improve step of ReST.

The loss is next-token cross-entropy on the assistant's own turns only (system prompt,
user turns and chat-template scaffolding are masked), including each turn's
end-of-turn token so that the model learns to stop. LoRA (peft) or full fine-tuning.

One plain training loop, run by ``accelerate.Accelerator`` in one process or several
(``accelerate launch --multi_gpu --num_processes N -m trainers.cli sft ...``;
without CUDA the processes train on CPU over gloo). Every process knows
the whole step plan (a seeded permutation per epoch), so each optimizer step averages
the loss over all of the step's label tokens on all processes, whatever their number.

``packing=True`` trains padding-free: each micro-batch's examples are packed end to end
into rows of ``max_length`` tokens with ``position_ids`` restarting per example (transformers
then keeps attention within each example); the examples and the loss of a step do not
change, only the pad tokens go. The first batch is checked packed against padded.
In one process, the output layer runs at the label positions only (the vocabulary-wide
logits of the prompt's tokens are never made) where the first batch shows the same loss.

Resumable: a checkpoint (trainable weights, optimizer, scheduler, loss curve) is written
at the end of every epoch (and every ``checkpoint_steps``); ``resume=True`` continues from
the latest. Randomness (dropout) is re-seeded from the step number at every step, so a
resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.generation import render_chat
from trainers.config import SFTConfig
from trainers.episodes import Episode
from trainers.optim import make_optimizer

IGNORE = -100
METRICS_FILE = "sft_metrics.json"
CHECKPOINTS = "checkpoints"
_PROBE = "<<sft-probe>>"  # an assistant message rendered to read the template's end-of-turn text


@dataclass(frozen=True)
class SFTExample:
    """One tokenised episode; ``labels`` is ``input_ids`` with every non-assistant token set to -100.
    ``move_weight``, when set, replaces ``turn_start_weight`` as the loss weight of the first
    labelled token (the first assistant turn's move tag; 0 leaves the move untaught)."""

    episode_id: str
    input_ids: list[int]
    labels: list[int]
    move_weight: float | None = None


@dataclass(frozen=True)
class SFTResult:
    """Where the trained model is (an adapter dir or a full checkpoint) and the run's metrics."""

    path: Path
    metrics: dict[str, Any]


# --- examples -------------------------------------------------------------------------------

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
    return probe[probe.index(_PROBE) + len(_PROBE):].rstrip()


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


def build_sft_examples(
    episodes: Sequence[Episode], tokenizer: Any, max_length: int, template_kwargs: Mapping[str, Any] | None = None,
    move_weights: Sequence[float | None] | None = None,
) -> list[SFTExample]:
    """Tokenise each episode's ``chat`` (``template_kwargs`` go to the chat template); only the
    assistant's turns carry labels. One example per episode, or one per assistant turn
    (ids ``<episode>/turn-<k>``) where the template is not incremental (``training_texts``).
    ``move_weights`` (one per episode, None for the default) set the loss weight of each
    episode's first move tag (``SFTExample.move_weight``).

    Episodes longer than ``max_length`` tokens are dropped (truncation would cut the
    final turn or the prompt it answers); ``ValueError`` if that leaves none.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("build_sft_examples needs a fast tokenizer (character offsets locate the assistant's tokens)")
    if move_weights is not None and len(move_weights) != len(episodes):
        raise ValueError(f"move_weights: {len(move_weights)} for {len(episodes)} episodes")
    examples, too_long = [], 0
    made: dict[tuple[int, float | None], list[SFTExample]] = {}  # an episode listed again (repeated passes)
    for n, episode in enumerate(episodes):
        key = (id(episode), move_weights[n] if move_weights is not None else None)
        if key in made:
            examples += made[key]
            too_long += not made[key]
            continue
        made[key] = []
        if not any(m["role"] == "assistant" for m in episode.chat):
            raise ValueError(f"episode {episode.episode_id} has no assistant message in its chat")
        texts = training_texts(episode.chat, tokenizer, template_kwargs)
        encoded = [tokenizer(text, add_special_tokens=False, return_offsets_mapping=True) for text, _ in texts]
        if any(len(e["input_ids"]) > max_length for e in encoded):
            too_long += 1
            continue
        start = len(examples)
        for k, ((_, spans), enc) in enumerate(zip(texts, encoded)):
            labels = [
                token if any(start <= first < end for start, end in spans) else IGNORE
                for token, (first, _) in zip(enc["input_ids"], enc["offset_mapping"])
            ]
            name = episode.episode_id if len(texts) == 1 else f"{episode.episode_id}/turn-{k + 1}"
            move_weight = move_weights[n] if move_weights is not None and k == 0 else None
            examples.append(SFTExample(name, enc["input_ids"], labels, move_weight))
        made[key] = examples[start:]
    if not examples:
        raise ValueError(f"no SFT examples: all {too_long} episodes are longer than max_length={max_length} tokens")
    if too_long:
        print(f"[sft] dropped {too_long} of {len(episodes)} episodes longer than max_length={max_length} tokens")
    return examples


# --- the step plan ----------------------------------------------------------------------------

# Length grouping sorts the examples of this many consecutive global batches by length
# (as the "megabatches" of Hugging Face's LengthGroupedSampler).
LENGTH_GROUP_BATCHES = 50


@dataclass(frozen=True)
class StepPlan:
    """Which examples each optimizer step uses: a seeded permutation per epoch, cut into
    global batches of ``batch_size * grad_accumulation * processes`` examples. A last batch
    smaller than the number of processes is dropped (every process needs an example).

    With ``lengths`` (group by length), each run of ``LENGTH_GROUP_BATCHES`` batches of the
    permutation is sorted by length before it is cut, and the epoch's batches are then
    shuffled: a batch holds examples of similar length (less padding), and the order of
    batches stays random."""

    num_examples: int
    global_batch: int
    processes: int
    seed: int
    epochs: int
    max_steps: int
    lengths: tuple[int, ...] | None = None

    @classmethod
    def make(cls, num_examples: int, config: SFTConfig, processes: int,
             lengths: Sequence[int] | None = None) -> "StepPlan":
        if num_examples < processes:
            raise ValueError(f"{num_examples} examples cannot feed {processes} processes")
        global_batch = config.batch_size * config.grad_accumulation * processes
        grouped = tuple(lengths) if config.group_by_length and lengths is not None else None
        return cls(num_examples, global_batch, processes, config.seed, config.epochs, config.max_steps, grouped)

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.global_batch + (self.num_examples % self.global_batch >= self.processes)

    @property
    def total_steps(self) -> int:
        """``max_steps`` when set, else ``epochs`` passes over the data."""
        return self.max_steps if self.max_steps > 0 else self.steps_per_epoch * self.epochs

    def examples(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.steps_per_epoch)
        return self._batches(epoch)[index]

    @functools.lru_cache(maxsize=2)
    def _batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        if self.lengths is None:
            return [order[i * self.global_batch : (i + 1) * self.global_batch] for i in range(self.steps_per_epoch)]
        span = self.global_batch * LENGTH_GROUP_BATCHES
        order = [i for s in range(0, len(order), span) for i in sorted(order[s : s + span], key=lambda i: -self.lengths[i])]
        batches = [order[i * self.global_batch : (i + 1) * self.global_batch] for i in range(self.steps_per_epoch)]
        # the last (short) batch stays last: only full batches are shuffled
        full = self.num_examples // self.global_batch
        shuffled = torch.randperm(full, generator=generator).tolist()
        return [batches[i] for i in shuffled] + batches[full:]

    def is_epoch_end(self, step: int) -> bool:
        return (step + 1) % self.steps_per_epoch == 0


def label_weights(labels: Sequence[int], turn_start_weight: float, move_weight: float | None = None) -> list[float]:
    """Each token's loss weight: 0 where unlabelled, ``turn_start_weight`` on the first labelled
    token of each assistant turn (its move tag), 1 on the rest of the turn; ``move_weight``
    (if not None) on the very first labelled token instead."""
    weights = [
        0.0 if label == IGNORE else turn_start_weight if i == 0 or labels[i - 1] == IGNORE else 1.0
        for i, label in enumerate(labels)
    ]
    if move_weight is not None:
        first = next((i for i, label in enumerate(labels) if label != IGNORE), None)
        if first is not None:
            weights[first] = move_weight
    return weights


def example_weights(example: SFTExample, turn_start_weight: float) -> list[float]:
    """``label_weights`` of one example (its own ``move_weight`` included)."""
    return label_weights(example.labels, turn_start_weight, example.move_weight)


def weighted(examples: Sequence[SFTExample], turn_start_weight: float) -> bool:
    """Whether any token's loss weight differs from 1 (then batches carry ``weights``)."""
    return turn_start_weight != 1.0 or any(e.move_weight is not None for e in examples)


def _label_weight_sum(example: SFTExample, turn_start_weight: float) -> float:
    """The example's summed loss weight (its label-token count when every weight is 1)."""
    return sum(example_weights(example, turn_start_weight)[1:])


def _collate(examples: Sequence[SFTExample], pad_id: int, device: torch.device,
             with_owner: bool = False, turn_start_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch: input_ids and attention_mask and labels, shape (batch, longest);
    ``with_owner`` adds ``owner``, each token's example (its row; -1 for padding); a
    ``turn_start_weight`` other than 1, or an example's ``move_weight``, adds ``weights``
    (``example_weights``)."""
    width = max(len(e.input_ids) for e in examples)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in examples]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in examples]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in examples]
    columns = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if with_owner:
        columns["owner"] = [[b] * len(e.input_ids) + [-1] * (width - len(e.input_ids)) for b, e in enumerate(examples)]
    if weighted(examples, turn_start_weight):
        columns["weights"] = [example_weights(e, turn_start_weight) + [0.0] * (width - len(e.labels)) for e in examples]
    return {k: torch.tensor(v, device=device) for k, v in columns.items()}


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: the indices of ``lengths`` grouped into rows whose lengths sum to
    at most ``capacity`` (an item longer than ``capacity`` gets a row of its own)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


def _collate_packed(examples: Sequence[SFTExample], pad_id: int, capacity: int, device: torch.device,
                    with_owner: bool = False, turn_start_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Padding-free micro-batch: the examples packed end to end into rows of at most
    ``capacity`` tokens, ``position_ids`` restarting at 0 for each example (the model's mask
    then keeps attention within each example) and no attention_mask; each example's first
    label is -100, so no token is trained to predict the next example. ``with_owner`` adds
    ``owner``, each token's example (its index in ``examples``; -1 for padding); a
    ``turn_start_weight`` other than 1, or an example's ``move_weight``, adds ``weights``
    (``example_weights``, 0 on each example's first token as its label)."""
    rows = pack_rows([len(e.input_ids) for e in examples], capacity)
    width = max(sum(len(examples[i].input_ids) for i in row) for row in rows)
    with_weights = weighted(examples, turn_start_weight)
    ids, positions, labels, owner, weights = [], [], [], [], []
    for row in rows:
        r_ids: list[int] = []
        r_pos: list[int] = []
        r_lab: list[int] = []
        r_own: list[int] = []
        r_wt: list[float] = []
        for i in row:
            e = examples[i]
            r_ids += e.input_ids
            r_pos += range(len(e.input_ids))
            r_lab += [IGNORE] + e.labels[1:]
            r_own += [i] * len(e.input_ids)
            if with_weights:
                r_wt += [0.0] + example_weights(e, turn_start_weight)[1:]
        fill = width - len(r_ids)  # the tail is one more (ignored) sequence of pad tokens
        ids.append(r_ids + [pad_id] * fill)
        positions.append(r_pos + list(range(fill)))
        labels.append(r_lab + [IGNORE] * fill)
        owner.append(r_own + [-1] * fill)
        weights.append(r_wt + [0.0] * fill)
    columns = {"input_ids": ids, "position_ids": positions, "labels": labels}
    if with_owner:
        columns["owner"] = owner
    if with_weights:
        columns["weights"] = weights
    return {k: torch.tensor(v, device=device) for k, v in columns.items()}


def _token_losses(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy at every position (0 where the label is -100), shape (rows, width - 1)."""
    # use_cache=False: with a cache, transformers ignores packed position_ids when masking
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    return F.cross_entropy(
        logits.flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE, reduction="none",
    ).view(logits.shape[:2])


def _token_loss_sum(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the batch's label tokens (weighted by ``weights``, if any)."""
    losses = _token_losses(model, batch)
    return (losses * batch["weights"][:, 1:]).sum() if "weights" in batch else losses.sum()


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """The decoder stack (``.model``) and output layer (``.lm_head``) of a causal LM, under a peft
    wrapper too; None where the model has no such pair."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = getattr(base, "model", None), getattr(base, "lm_head", None)
    return (decoder, head) if isinstance(decoder, torch.nn.Module) and isinstance(head, torch.nn.Module) else None


def _label_token_loss_sum(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``_token_loss_sum`` with the output layer applied at the label positions only: most tokens
    (system prompt, user turns) carry no label, and their logits (vocabulary-wide) are the
    costliest tensor of a step. Only for models whose logits are ``lm_head(last hidden state)``
    (``label_logits_match`` checks)."""
    decoder, head = _decoder_and_head(model)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    hidden = decoder(**inputs, use_cache=False).last_hidden_state[:, :-1]
    labels = batch["labels"][:, 1:]
    picked = labels != IGNORE
    losses = F.cross_entropy(head(hidden[picked]).float(), labels[picked], reduction="none")
    return (losses * batch["weights"][:, 1:][picked]).sum() if "weights" in batch else losses.sum()


@torch.no_grad()
def label_logits_match(model: Any, batch: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``_label_token_loss_sum`` equals the full forward's loss on ``batch`` (False for a
    model without a ``.model`` / ``.lm_head`` pair, or one that transforms the logits after the
    output layer, as Gemma-2's final soft-capping does)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    # logits rescaled after the output layer (Gemma-2's soft-capping, Cohere's and Granite's scales)
    if _decoder_and_head(model) is None or any(
        getattr(config, name, None) not in (None, 1.0) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    ):
        return False
    was_training = model.training
    model.eval()
    try:
        full, picked = _token_loss_sum(model, batch).item(), _label_token_loss_sum(model, batch).item()
    finally:
        model.train(was_training)
    return math.isfinite(full) and abs(full - picked) <= 1e-3 * max(1.0, abs(full))


def _losses_by_example(model: Any, batch: Mapping[str, torch.Tensor], count: int) -> list[torch.Tensor]:
    """Each example's label-token losses, in token order."""
    losses, owner = _token_losses(model, batch), batch["owner"][:, 1:]
    labelled = batch["labels"][:, 1:] != IGNORE
    return [losses[(owner == k) & labelled] for k in range(count)]


class PackingUnsupported(RuntimeError):
    """The model's attention ignores packed ``position_ids`` (its tokens would attend across
    examples): train it with ``sft.packing=false``."""


@torch.no_grad()
def check_packing(model: Any, examples: Sequence[SFTExample], pad_id: int, capacity: int,
                  device: torch.device) -> None:
    """Raise :class:`PackingUnsupported` unless every label token of ``examples`` has the same
    loss packed and padded (the model confines attention to each packed example)."""
    was_training = model.training
    model.eval()
    try:
        padded = _losses_by_example(model, _collate(examples, pad_id, device, with_owner=True), len(examples))
        packed = _losses_by_example(
            model, _collate_packed(examples, pad_id, capacity, device, with_owner=True), len(examples))
    finally:
        model.train(was_training)
    # float32 layouts agree to ~1e-6; low-precision (LoRA's bf16 base) weights round differently per layout
    full_precision = next(model.parameters()).dtype == torch.float32
    tolerance = 1e-3 if full_precision else 0.1
    gap = max((a - b).abs().max().item() for a, b in zip(padded, packed) if a.numel())
    if gap > tolerance:
        raise PackingUnsupported(
            f"sft.packing: a token's loss differs by {gap:.4f} packed and padded: this model's attention does "
            "not keep packed examples apart (it ignores position_ids); set sft.packing=false"
        )


def _label_tokens(example: SFTExample) -> int:
    return sum(1 for label in example.labels[1:] if label != IGNORE)


# --- model ---------------------------------------------------------------------------------

def use_bf16(setting: bool | str) -> bool:
    """``"auto"``: bf16 where a CUDA GPU supports it; otherwise the boolean itself."""
    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


def load_trainable_model(model_path: str | Path, config: SFTConfig, bf16: bool, init_adapter: str | Path | None):
    """The model to train: LoRA on a frozen base (bf16 base weights when training in bf16:
    they never change), or every weight in float32 for full fine-tuning."""
    from peft import LoraConfig, PeftModel, get_peft_model

    dtype = torch.bfloat16 if bf16 and config.lora else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not config.lora:
        if init_adapter is not None:
            raise ValueError("init_adapter needs sft.lora=true")
        return model
    if init_adapter is not None:
        return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    lora = LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.target_modules, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _lr_lambda(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


# --- checkpoints ---------------------------------------------------------------------------

def _fingerprint(examples: Sequence[SFTExample], config: SFTConfig, processes: int, start: Any) -> str:
    """What a checkpoint must agree on to be resumed: data, settings, process count, starting weights."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("logging_steps", "checkpoint_steps")}
    h = hashlib.sha256(json.dumps([settings, processes, start]).encode())
    for e in examples:
        h.update(json.dumps([e.input_ids, e.labels] + ([] if e.move_weight is None else [e.move_weight])).encode())
    return h.hexdigest()


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint with the most steps in ``out_dir/checkpoints`` (None if none)."""
    found = sorted(Path(out_dir, CHECKPOINTS).glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return found[-1] if found else None


def _save_checkpoint(out: Path, state: dict[str, Any]) -> None:
    """Write atomically (a kill mid-write leaves the previous checkpoint), then drop older ones."""
    folder = out / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{state['step']}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    for old in folder.glob("step-*.pt"):
        if old != path:
            old.unlink()


def _restore(checkpoint: Path, fingerprint: str, model: Any, optimizer: Any, scheduler: Any) -> tuple[int, list]:
    """Load a checkpoint into the (unwrapped) model, optimizer and scheduler; returns its step
    and loss curve. Refuses one written for other data or settings."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if state["fingerprint"] != fingerprint:
        raise ValueError(
            f"{checkpoint} was written for other data or settings; delete {checkpoint.parent} to restart"
        )
    missing = set(state["trainable"]) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"{checkpoint} holds weights the model lacks: {sorted(missing)[:3]}")
    model.load_state_dict(state["trainable"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["step"], state["loss_curve"]


# --- training ------------------------------------------------------------------------------

def train_sft(
    model_path: str | Path,
    examples: Sequence[SFTExample],
    out_dir: str | Path,
    config: SFTConfig,
    resume: bool = False,
    init_adapter: str | Path | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> SFTResult:
    """Fine-tune ``model_path`` on ``examples``; save the adapter (LoRA) or the whole model,
    the tokenizer and ``sft_metrics.json`` (loss curve) to ``out_dir``.

    ``resume=True`` continues from the latest checkpoint in ``out_dir`` (or returns the
    finished result if ``out_dir`` already holds one). ``init_adapter`` continues training
    an existing LoRA adapter instead of a fresh one. ``on_log`` receives each logged record
    (main process only).
    """
    out = Path(out_dir)
    if resume and (out / METRICS_FILE).exists():
        return SFTResult(out, json.loads((out / METRICS_FILE).read_text()))
    started = time.time()
    bf16 = use_bf16(config.bf16)
    # accelerate keeps one precision per process; a later train_sft (another stage, or a test) may
    # ask for another: forget the old setting (the process group, PartialState, stays).
    AcceleratorState._reset_state()
    # cpu=True without CUDA: then `accelerate launch --multi_gpu` (or torchrun) starts gloo CPU processes.
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if bf16 else "no")
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    set_seed(config.seed)  # the fresh LoRA weights
    model = load_trainable_model(model_path, config, bf16, init_adapter)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, config.optimizer, config.learning_rate, config.weight_decay)
    processes = accelerator.num_processes
    plan = StepPlan.make(len(examples), config, processes, [len(e.input_ids) for e in examples])
    # Not accelerator.prepare'd: that would step the schedule once per process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(plan.total_steps, config.warmup_ratio))
    model.to(accelerator.device)
    if config.packing:
        # before prepare: with bf16 mixed precision, prepare makes the forward autocast, and
        # bf16 rounding (~2e-3 here) would hide a leak as small as one across packed examples
        check_packing(model, [examples[i] for i in plan.examples(0)[: config.batch_size]], pad_id,
                      config.max_length, accelerator.device)
    # The output layer at label positions only, where that gives the same loss (checked in float32
    # on the first micro-batch). One process only: DDP syncs gradients through its wrapper's forward.
    if config.packing:
        # (an example longer than max_length, possible only when passed in directly, gets a row of its own)
        collate = functools.partial(_collate_packed, pad_id=pad_id, capacity=config.max_length,
                                    device=accelerator.device, turn_start_weight=config.turn_start_weight)
    else:
        collate = functools.partial(_collate, pad_id=pad_id, device=accelerator.device,
                                    turn_start_weight=config.turn_start_weight)
    first_batch = collate([examples[i] for i in plan.examples(0)[: config.batch_size]])
    label_logits = processes == 1 and label_logits_match(model, first_batch)
    loss_sum = _label_token_loss_sum if label_logits else _token_loss_sum
    model, optimizer = accelerator.prepare(model, optimizer)
    fingerprint = _fingerprint(examples, config, processes, [str(model_path), str(init_adapter)])

    start, curve = 0, []
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is not None:
        start, curve = _restore(checkpoint, fingerprint, accelerator.unwrap_model(model), optimizer, scheduler)
        accelerator.print(f"[sft] resumed from {checkpoint} at step {start}/{plan.total_steps}")

    weight_sums = [_label_weight_sum(e, config.turn_start_weight) for e in examples]  # once, not every epoch

    model.train()
    window_loss = window_tokens = 0.0
    for step in range(start, plan.total_steps):
        set_seed(config.seed + step, device_specific=True)  # dropout depends on the step alone: resumable
        chosen = plan.examples(step)
        step_tokens = sum(weight_sums[i] for i in chosen)
        share = chosen[accelerator.process_index :: processes]
        micro_batches = [share[j : j + config.batch_size] for j in range(0, len(share), config.batch_size)]
        local_loss = 0.0
        for j, micro in enumerate(micro_batches):
            batch = collate([examples[i] for i in micro])
            # Gradients are all-reduced (averaged over processes) on the last micro-batch only.
            with accelerator.no_sync(model) if j < len(micro_batches) - 1 else nullcontext():
                with accelerator.autocast():  # the label-only path calls the decoder beneath prepare's autocast
                    token_losses = loss_sum(model, batch)
                accelerator.backward(token_losses * processes / max(step_tokens, 1))
            local_loss += token_losses.item()
        accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window_loss += accelerator.reduce(torch.tensor(local_loss, device=accelerator.device), "sum").item()
        window_tokens += step_tokens

        done = step + 1
        if done % config.logging_steps == 0 or done == plan.total_steps:
            record = {
                "step": done, "epoch": round(done / plan.steps_per_epoch, 4),
                "loss": window_loss / max(window_tokens, 1), "lr": scheduler.get_last_lr()[0], "tokens": window_tokens,
            }
            curve.append(record)
            window_loss = window_tokens = 0.0
            accelerator.print(f"[sft] step {done}/{plan.total_steps} loss {record['loss']:.4f} lr {record['lr']:.2e}")
            if on_log is not None and accelerator.is_main_process:
                on_log(record)
        periodic = config.checkpoint_steps > 0 and done % config.checkpoint_steps == 0
        if done < plan.total_steps and (plan.is_epoch_end(step) or periodic):
            if accelerator.is_main_process:
                named = accelerator.unwrap_model(model).named_parameters()
                trained = {n: p.detach().cpu() for n, p in named if p.requires_grad}
                _save_checkpoint(out, {
                    "step": done, "trainable": trained, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "loss_curve": curve, "fingerprint": fingerprint,
                })
            accelerator.wait_for_everyone()

    metrics = {
        "completed": True, "steps": plan.total_steps, "examples": len(examples), "processes": processes,
        "label_tokens": sum(map(_label_tokens, examples)), "final_loss": curve[-1]["loss"] if curve else None,
        "loss_curve": curve, "seconds": round(time.time() - started, 2), "lora": config.lora, "bf16": bf16,
        "label_logits_only": label_logits,
        "base_model": str(model_path), "config": asdict(config),
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        print(f"[sft] saved {out} (final loss {metrics['final_loss']})")
        for leftover in (out / CHECKPOINTS).glob("*"):
            leftover.unlink()
        if (out / CHECKPOINTS).exists():
            (out / CHECKPOINTS).rmdir()
    accelerator.wait_for_everyone()
    return SFTResult(out, metrics)


# --- command line ----------------------------------------------------------------------------

def _run(args: argparse.Namespace) -> int:
    from agents.model_fetch import resolve_model
    from trainers.config import load_config
    from trainers.episodes import read_episodes

    config = load_config(args.config, args.overrides)
    model = resolve_model(args.model or config.model.name)
    episodes = [e for path in args.episodes for e in read_episodes(path)]
    if not episodes:
        raise SystemExit(f"no episodes in {', '.join(args.episodes)}")
    tokenizer = AutoTokenizer.from_pretrained(model)
    examples = build_sft_examples(episodes, tokenizer, config.sft.max_length, config.model.chat_template_kwargs)
    train_sft(model, examples, args.out, config.sft, resume=args.resume, init_adapter=args.init_adapter)
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft", help="fine-tune on episodes (loss on the assistant's turns); several processes via "
        "`accelerate launch --multi_gpu --num_processes N -m trainers.cli sft ...`",
    )
    p.add_argument("--config", default=None, help="YAML run config (its sft section); defaults if omitted")
    p.add_argument("--episodes", nargs="+", required=True, help="episode JSONL files to train on")
    p.add_argument("--out", required=True, help="where the adapter or checkpoint goes")
    p.add_argument("--model", default=None, help="base model dir or known name (default: the config's model.name)")
    p.add_argument("--init-adapter", default=None, help="continue training this LoRA adapter")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. sft.epochs=2")
    p.set_defaults(func=_run)
