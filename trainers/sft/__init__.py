"""Supervised fine-tuning on episodes: the improve step of ReST (and the behaviour-cloning start).

The loss is next-token cross-entropy on the assistant's own turns only, LoRA (peft) or full
fine-tuning. By concern: ``examples`` (episodes to token ids and loss masks), ``batching``
(the step plan; one collator, padded or packed), ``losses`` (the loss, full forward or the
output layer at the labelled positions only), ``optim`` (AdamW, or Muon + AdamW),
``checkpoints`` and ``loop`` (the training loop; resumable).
"""

from trainers.sft.batching import StepPlan, collate, pack_rows
from trainers.sft.examples import IGNORE, SFTExample, assistant_spans, build_sft_examples, label_weights
from trainers.sft.loop import METRICS_FILE, SFTResult, train_sft

__all__ = [
    "IGNORE",
    "METRICS_FILE",
    "SFTExample",
    "SFTResult",
    "StepPlan",
    "assistant_spans",
    "build_sft_examples",
    "collate",
    "label_weights",
    "pack_rows",
    "train_sft",
]
