"""The SFT loss: next-token cross-entropy summed over a micro-batch's labelled tokens (weighted
by ``weights`` where a batch has them), with the full forward or with the output layer at the
labelled positions only."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from trainers.sft.batching import collate
from trainers.sft.examples import IGNORE, SFTExample

# config attributes of models that rescale the logits after the output layer (Gemma-2's final
# soft-capping, Cohere's and Granite's scales): the labels-only path would skip that step
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def _model_inputs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}


def token_losses(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy at every position (0 where the label is -100), shape (rows, width - 1)."""
    # use_cache=False: with a cache, transformers ignores packed position_ids when masking
    logits = model(**_model_inputs(batch), use_cache=False).logits[:, :-1]
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        batch["labels"][:, 1:].flatten(),
        ignore_index=IGNORE,
        reduction="none",
    ).view(logits.shape[:2])


def token_loss_sum(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the batch's label tokens (weighted by ``weights``, if any)."""
    losses = token_losses(model, batch)
    return (losses * batch["weights"][:, 1:]).sum() if "weights" in batch else losses.sum()


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """The decoder stack (``.model``) and output layer (``.lm_head``) of a causal LM, under a peft
    wrapper too; None where the model has no such pair."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = getattr(base, "model", None), getattr(base, "lm_head", None)
    return (decoder, head) if isinstance(decoder, torch.nn.Module) and isinstance(head, torch.nn.Module) else None


def supports_label_positions(model: Any) -> bool:
    """Whether the model's logits are ``lm_head(last hidden state)`` unchanged, so that the output
    layer can run at the labelled positions only (``label_token_loss_sum``; the two losses' equality
    is tested in tests/test_sft.py)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    return _decoder_and_head(model) is not None and all(
        getattr(config, name, None) in (None, 1.0) for name in LOGIT_TRANSFORMS
    )


def _label_position_losses(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The next-token losses at the label positions only (the output layer runs there alone) and
    the (rows, width - 1) mask of those positions."""
    decoder, head = _decoder_and_head(model)
    hidden = decoder(**_model_inputs(batch), use_cache=False).last_hidden_state[:, :-1]
    labels = batch["labels"][:, 1:]
    picked = labels != IGNORE
    return F.cross_entropy(head(hidden[picked]).float(), labels[picked], reduction="none"), picked


def label_token_loss_sum(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``token_loss_sum`` with the output layer applied at the label positions only: most tokens
    (system prompt, user turns) carry no label, and their logits (vocabulary-wide) are the
    costliest tensor of a step. Only for models ``supports_label_positions`` accepts."""
    losses, picked = _label_position_losses(model, batch)
    return (losses * batch["weights"][:, 1:][picked]).sum() if "weights" in batch else losses.sum()


def losses_by_example(model: Any, batch: Mapping[str, torch.Tensor], count: int) -> list[torch.Tensor]:
    """Each example's label-token losses, in token order (the batch made ``with_owner``). The output
    layer runs at the label positions only where the model allows it: a full (rows, width, vocabulary)
    float32 logit tensor is what a large vocabulary cannot afford (Gemma 3's 262,144 words: 8.6 GB
    for 16 rows of 512)."""
    owner = batch["owner"][:, 1:]
    if supports_label_positions(model):
        losses, picked = _label_position_losses(model, batch)
        return [losses[owner[picked] == k] for k in range(count)]
    losses, labelled = token_losses(model, batch), batch["labels"][:, 1:] != IGNORE
    return [losses[(owner == k) & labelled] for k in range(count)]


class PackingUnsupported(RuntimeError):
    """The model's attention ignores packed ``position_ids`` (its tokens would attend across
    examples): train it with ``sft.packing=false``."""


@torch.no_grad()
def check_packing(model: Any, examples: Sequence[SFTExample], pad_id: int, capacity: int, device: torch.device) -> None:
    """Raise :class:`PackingUnsupported` unless every label token of ``examples`` has the same
    loss packed and padded (the model confines attention to each packed example). A run with
    ``sft.packing`` checks its first micro-batch: attention that leaks across packed examples
    would otherwise train silently on the wrong context. The check computes in float32: low-precision
    weights (LoRA's bf16 base) are upcast for it and restored bit for bit, since bf16 rounding differs
    per layout (SmolLM2: up to 0.19 on a token) by more than a leak moves a small model's losses."""
    was_training = model.training
    tensors = [*model.parameters(), *model.buffers()]
    dtypes = [t.dtype for t in tensors]
    model.eval()
    try:
        for t in tensors:
            if t.is_floating_point():
                t.data = t.data.float()
        padded = losses_by_example(model, collate(examples, pad_id, device, with_owner=True), len(examples))
        packed = losses_by_example(
            model, collate(examples, pad_id, device, packing=True, capacity=capacity, with_owner=True), len(examples)
        )
    finally:
        for t, dtype in zip(tensors, dtypes):
            t.data = t.data.to(dtype)  # float32 holds every bf16 value: the round trip is exact
        model.train(was_training)
    # float32 layouts agree to ~1e-6
    gap = max((a - b).abs().max().item() for a, b in zip(padded, packed) if a.numel())
    if gap > 1e-3:
        raise PackingUnsupported(
            f"sft.packing: a token's loss differs by {gap:.4f} packed and padded: this model's attention does "
            "not keep packed examples apart (it ignores position_ids); set sft.packing=false"
        )
