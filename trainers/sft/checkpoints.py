"""SFT checkpoints: written atomically, refused when written for other data or settings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from trainers.config import SFTConfig
from trainers.sft.examples import SFTExample

CHECKPOINTS = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the file and what to do."""


def fingerprint(examples: Sequence[SFTExample], config: SFTConfig, processes: int, start: Any) -> str:
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


def save_checkpoint(out: Path, state: dict[str, Any]) -> None:
    """Write atomically (a kill mid-write leaves the previous checkpoint), then drop older ones."""
    folder = out / CHECKPOINTS
    path = folder / f"step-{state['step']}.pt"
    tmp = path.with_suffix(".tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as e:  # a full disk surfaces from torch's writer as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"cannot write the checkpoint {path} ({e}): free disk space or make {folder} writable, then resume"
        ) from e
    for old in folder.glob("step-*.pt"):
        if old != path:
            old.unlink()


def restore_checkpoint(
    checkpoint: Path, fingerprint: str, model: Any, optimizer: Any, scheduler: Any
) -> tuple[int, list]:
    """Load a checkpoint into the (unwrapped) model, optimizer and scheduler; returns its step
    and loss curve. Refuses one written for other data or settings, or one that does not load."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{checkpoint} is damaged ({e}); delete it to restart this stage's training") from e
    if state.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{checkpoint} was written for other data or settings; delete {checkpoint.parent} to restart"
        )
    missing = set(state["trainable"]) - {n for n, _ in model.named_parameters()}
    if missing:
        raise CheckpointError(f"{checkpoint} holds weights the model lacks: {sorted(missing)[:3]}")
    model.load_state_dict(state["trainable"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["step"], state["loss_curve"]
