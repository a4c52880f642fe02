"""The SFT training loop: one plain loop, run by ``accelerate.Accelerator`` in one process or several.

``accelerate launch --multi_gpu --num_processes N -m trainers.cli sft ...`` trains on N
processes (without CUDA, gloo processes on the CPU). Every process knows the whole step plan,
so each optimizer step averages the loss over all of the step's label tokens on all processes.

Resumable: a checkpoint (trainable weights, optimizer, scheduler, loss curve) is written at the
end of every epoch (and every ``checkpoint_steps``); ``resume=True`` continues from the latest.
Randomness (dropout) is re-seeded from the step number at every step, so a resumed run ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import math
import time
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.precision import native_bf16
from trainers.config import SFTConfig
from trainers.sft.batching import StepPlan, collate
from trainers.sft.checkpoints import (
    CHECKPOINTS,
    CheckpointError,
    fingerprint,
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from trainers.sft.examples import SFTExample, example_weights, label_tokens
from trainers.sft.losses import check_packing, label_token_loss_sum, supports_label_positions, token_loss_sum
from trainers.sft.optim import make_optimizer

METRICS_FILE = "sft_metrics.json"


@dataclass(frozen=True)
class SFTResult:
    """Where the trained model is (an adapter dir or a full checkpoint) and the run's metrics."""

    path: Path
    metrics: dict[str, Any]


def use_bf16(setting: bool | str) -> bool:
    """``"auto"``: bf16 where the training device computes it natively (a CUDA GPU with bf16, else a
    CPU with AVX-512 BF16 or AMX: ``agents.precision.native_bf16``); otherwise the boolean itself."""
    if setting == "auto":
        return native_bf16("cuda" if torch.cuda.is_available() else "cpu")
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
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def linear_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """The learning-rate factor of each step: a linear warm-up, then a linear decay to 0."""
    warmup = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


class _Training:
    """The state of one SFT run: accelerator, model, optimizer, schedule, plan, loss path."""

    def __init__(
        self, model_path: str | Path, examples: Sequence[SFTExample], config: SFTConfig, init_adapter: str | Path | None
    ) -> None:
        self.config, self.examples = config, examples
        self.bf16 = use_bf16(config.bf16)
        # accelerate keeps one precision per process; a later train_sft (another stage, or a test) may
        # ask for another: forget the old setting (the process group, PartialState, stays).
        AcceleratorState._reset_state()
        # cpu=True without CUDA: then `accelerate launch --multi_gpu` (or torchrun) starts gloo CPU processes.
        self.accelerator = acc = Accelerator(
            cpu=not torch.cuda.is_available(), mixed_precision="bf16" if self.bf16 else "no"
        )
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id
        set_seed(config.seed)  # the fresh LoRA weights
        model = load_trainable_model(model_path, config, self.bf16, init_adapter)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(model, config.optimizer, config.learning_rate, config.weight_decay)
        self.processes = acc.num_processes
        self.plan = StepPlan.make(len(examples), config, self.processes)
        # Not accelerator.prepare'd: that would step the schedule once per process.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, linear_schedule(self.plan.total_steps, config.warmup_ratio)
        )
        model.to(acc.device)
        self.collate = functools.partial(
            collate,
            pad_id=self.pad_id,
            device=acc.device,
            packing=config.packing,
            capacity=config.max_length,
            move_tag_weight=config.move_tag_weight,
        )
        if config.packing:
            # before prepare: with bf16 mixed precision, prepare makes the forward autocast, and
            # bf16 rounding (~2e-3 here) would hide a leak as small as one across packed examples
            check_packing(
                model,
                [examples[i] for i in self.plan.examples(0)[: config.batch_size]],
                self.pad_id,
                config.max_length,
                acc.device,
            )
        # One process only for the labels-only output layer: DDP syncs gradients through its wrapper's forward.
        self.label_positions = config.label_positions_only and self.processes == 1 and supports_label_positions(model)
        self.loss_sum = label_token_loss_sum if self.label_positions else token_loss_sum
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.fingerprint = fingerprint(examples, config, self.processes, [str(model_path), str(init_adapter)])
        self.weight_sums = [sum(example_weights(e, config.move_tag_weight)[1:]) for e in examples]

    def step(self, step: int) -> tuple[float, float]:
        """One optimizer step; returns the step's summed loss (all processes) and summed loss weight."""
        acc, config = self.accelerator, self.config
        set_seed(config.seed + step, device_specific=True)  # dropout depends on the step alone: resumable
        chosen = self.plan.examples(step)
        step_tokens = sum(self.weight_sums[i] for i in chosen)
        share = chosen[acc.process_index :: self.processes]
        micro_batches = [share[j : j + config.batch_size] for j in range(0, len(share), config.batch_size)]
        local_loss = 0.0
        for j, micro in enumerate(micro_batches):
            batch = self.collate([self.examples[i] for i in micro])
            # Gradients are all-reduced (averaged over processes) on the last micro-batch only.
            with acc.no_sync(self.model) if j < len(micro_batches) - 1 else nullcontext():
                with acc.autocast():  # the label-only path calls the decoder beneath prepare's autocast
                    token_losses = self.loss_sum(self.model, batch)
                acc.backward(token_losses * self.processes / max(step_tokens, 1))
            local_loss += token_losses.item()
        acc.clip_grad_norm_(self.trainable, config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return acc.reduce(torch.tensor(local_loss, device=acc.device), "sum").item(), step_tokens

    def summary(self) -> dict[str, Any]:
        """What the run's metrics file says of its set-up."""
        return {
            "completed": True,
            "steps": self.plan.total_steps,
            "examples": len(self.examples),
            "processes": self.processes,
            "label_tokens": sum(map(label_tokens, self.examples)),
            "lora": self.config.lora,
            "bf16": self.bf16,
            "label_positions_only": self.label_positions,
            "config": asdict(self.config),
        }

    def log(self, done: int, loss: float, tokens: float, on_log: Callable[[dict[str, Any]], None] | None) -> dict:
        """The loss record of the steps up to ``done`` (printed, and passed to ``on_log``)."""
        record = {
            "step": done,
            "epoch": round(done / self.plan.steps_per_epoch, 4),
            "loss": loss / max(tokens, 1),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens": tokens,
        }
        acc = self.accelerator
        acc.print(f"[sft] step {done}/{self.plan.total_steps} loss {record['loss']:.4f} lr {record['lr']:.2e}")
        if on_log is not None and acc.is_main_process:
            on_log(record)
        return record

    def checkpoint(self, out: Path, done: int, curve: list) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            named = acc.unwrap_model(self.model).named_parameters()
            trained = {n: p.detach().cpu() for n, p in named if p.requires_grad}
            save_checkpoint(
                out,
                {
                    "step": done,
                    "trainable": trained,
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "loss_curve": curve,
                    "fingerprint": self.fingerprint,
                },
            )
        acc.wait_for_everyone()

    def save(self, out: Path, metrics: dict[str, Any]) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            try:
                out.mkdir(parents=True, exist_ok=True)
                acc.unwrap_model(self.model).save_pretrained(out)
                self.tokenizer.save_pretrained(out)
                (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))  # last: the "finished" mark
            except (OSError, RuntimeError) as e:  # a full disk surfaces from safetensors/torch as RuntimeError
                raise CheckpointError(
                    f"cannot write the trained model to {out} ({e}): free disk space or make it "
                    "writable, then resume (training restarts from the last checkpoint)"
                ) from e
            print(f"[sft] saved {out} (final loss {metrics['final_loss']})")
            for leftover in (out / CHECKPOINTS).glob("*"):
                leftover.unlink()
            if (out / CHECKPOINTS).exists():
                (out / CHECKPOINTS).rmdir()
        acc.wait_for_everyone()


def return_freed_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc's ``malloc_trim``;
    nothing elsewhere). A training step's activations are freed to the heap, not to the OS, and
    the evaluation's engines start next, beside this process (``benchmarks/sft_memory.py``)."""
    gc.collect()
    with suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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
    run = _Training(model_path, examples, config, init_adapter)
    plan, acc = run.plan, run.accelerator
    start, curve = 0, []
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is not None:
        start, curve = restore_checkpoint(
            checkpoint, run.fingerprint, acc.unwrap_model(run.model), run.optimizer, run.scheduler
        )
        acc.print(f"[sft] resumed from {checkpoint} at step {start}/{plan.total_steps}")
    run.model.train()
    window = [0.0, 0.0]  # summed loss and loss weight since the last logged step
    for step in range(start, plan.total_steps):
        loss, tokens = run.step(step)
        window, done = [window[0] + loss, window[1] + tokens], step + 1
        if done % config.logging_steps == 0 or done == plan.total_steps:
            curve.append(run.log(done, *window, on_log))
            window = [0.0, 0.0]
        periodic = config.checkpoint_steps > 0 and done % config.checkpoint_steps == 0
        if done < plan.total_steps and (plan.is_epoch_end(step) or periodic):
            run.checkpoint(out, done, curve)
    metrics = {
        **run.summary(),
        "final_loss": curve[-1]["loss"] if curve else None,
        "loss_curve": curve,
        "seconds": round(time.time() - started, 2),
        "base_model": str(model_path),
    }
    run.save(out, metrics)
    del run, acc, plan
    return_freed_memory()
    return SFTResult(out, metrics)
