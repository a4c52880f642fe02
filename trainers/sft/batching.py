"""Which examples each optimizer step trains on, and how a micro-batch is laid out as tensors."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch

from trainers.config import SFTConfig
from trainers.sft.examples import IGNORE, SFTExample, example_weights


@dataclass(frozen=True)
class StepPlan:
    """Which examples each optimizer step uses: a seeded permutation per epoch, cut into
    global batches of ``batch_size * grad_accumulation * processes`` examples. A last batch
    smaller than the number of processes is dropped (every process needs an example).
    Every process knows the whole plan, so a step averages its loss over all of the step's
    label tokens on all processes, whatever their number."""

    num_examples: int
    global_batch: int
    processes: int
    seed: int
    epochs: int
    max_steps: int

    @classmethod
    def make(cls, num_examples: int, config: SFTConfig, processes: int) -> StepPlan:
        if num_examples < processes:
            raise ValueError(f"{num_examples} examples cannot feed {processes} processes")
        global_batch = config.batch_size * config.grad_accumulation * processes
        return cls(num_examples, global_batch, processes, config.seed, config.epochs, config.max_steps)

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

    @functools.lru_cache(maxsize=2)  # noqa: B019 (a frozen plan, cached for the two epochs a step can span)
    def _batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        return [order[i * self.global_batch : (i + 1) * self.global_batch] for i in range(self.steps_per_epoch)]

    def is_epoch_end(self, step: int) -> bool:
        return (step + 1) % self.steps_per_epoch == 0


def weighted(examples: Sequence[SFTExample], move_tag_weight: float) -> bool:
    """Whether any token's loss weight differs from 1 (then batches carry ``weights``)."""
    return move_tag_weight != 1.0 or any(e.move_weight is not None or e.followup_weight != 1.0 for e in examples)


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


def collate(
    examples: Sequence[SFTExample],
    pad_id: int,
    device: torch.device,
    packing: bool = False,
    capacity: int = 0,
    move_tag_weight: float = 1.0,
    with_owner: bool = False,
) -> dict[str, torch.Tensor]:
    """A micro-batch as tensors: ``input_ids`` and ``labels``, ``weights`` where some loss weight
    is not 1 (``example_weights``), and with ``with_owner`` each token's example (its index in
    ``examples``; -1 for padding).

    Padded (``packing=False``): one example a row, right-padded, with an ``attention_mask``.
    Packed: the examples end to end in rows of at most ``capacity`` tokens with ``position_ids``
    restarting at 0 for each example (the model's mask then keeps attention within each) and no
    attention mask; each example's first label is -100, so no token learns to predict the next
    example, and the tail of a row is one more (ignored) sequence of pad tokens.
    """
    rows = pack_rows([len(e.input_ids) for e in examples], capacity) if packing else [[i] for i in range(len(examples))]
    width = max(sum(len(examples[i].input_ids) for i in row) for row in rows)
    with_weights = weighted(examples, move_tag_weight)
    columns: dict[str, list[list]] = {k: [] for k in ("input_ids", "labels", "owner", "weights", "aux")}
    for row in rows:
        ids, labels, owner, weights, aux = [], [], [], [], []
        for i in row:
            e = examples[i]
            ids += e.input_ids
            labels += [IGNORE, *e.labels[1:]] if packing else e.labels
            owner += [i] * len(e.input_ids)
            if with_weights:
                w = example_weights(e, move_tag_weight)
                weights += [0.0, *w[1:]] if packing else w
            aux += range(len(e.input_ids)) if packing else [1] * len(e.input_ids)
        fill = width - len(ids)
        columns["input_ids"].append(ids + [pad_id] * fill)
        columns["labels"].append(labels + [IGNORE] * fill)
        columns["owner"].append(owner + [-1] * fill)
        columns["weights"].append(weights + [0.0] * fill)
        columns["aux"].append(aux + (list(range(fill)) if packing else [0] * fill))
    columns["position_ids" if packing else "attention_mask"] = columns.pop("aux")
    if not with_owner:
        del columns["owner"]
    if not with_weights:
        del columns["weights"]
    return {k: torch.tensor(v, device=device) for k, v in columns.items()}
