"""A run's stages as folders: ``done.json`` marks a finished stage, and resume reads it.

Every stage of a ReST run (``bc``, ``bc/eval``, ``iter-1``, ``iter-1/eval``, ...) writes into its
own folder of the run directory and leaves ``done.json`` when it finishes, holding the policy it
made (paths relative to the run directory, so a moved run resumes) and its metrics. A resumed
run skips finished stages; one it resumes with a changed config is refused only where the
change would alter a finished stage (``resume_check``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.config import ConfigError, RunConfig
from trainers.config_loading import load_config, save_config, to_dict

DONE = "done.json"
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class Policy:
    """What generates: a model checkpoint and, for LoRA, an adapter on it."""

    model: str
    adapter: str | None
    name: str


class StageError(RuntimeError):
    """A finished stage's record or files are damaged or missing; the message says what to do."""


class Stage:
    """One stage's folder; ``record`` is its ``done.json`` (None while unfinished)."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.run_dir, self.name = run_dir, name
        self.folder = run_dir / name

    @property
    def record(self) -> dict[str, Any] | None:
        path = self.folder / DONE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StageError(f"{path} is damaged ({e}): delete {self.folder} to redo stage {self.name}") from None

    def policy(self) -> Policy:
        """The policy the finished stage made, its files checked to be there."""
        record = self.record
        if record is None or "policy" not in record:
            raise StageError(f"stage {self.name} has no finished policy in {self.folder / DONE}")
        policy = _policy_from_record(record["policy"], self.run_dir)
        for path in (policy.model, policy.adapter):
            if path is not None and Path(path).is_absolute() and not Path(path).exists():
                raise StageError(
                    f"{path} (the policy of finished stage {self.name}) is missing: "
                    f"delete {self.folder} to redo the stage"
                )
        return policy

    def finish(self, record: dict[str, Any], policy: Policy | None = None) -> None:
        """Atomically record that the stage finished (with the policy it made, if any)."""
        if policy is not None:
            record = {"policy": _policy_record(policy, self.run_dir), **record}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (DONE + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, self.folder / DONE)


def _policy_record(policy: Policy, run_dir: Path) -> dict[str, Any]:
    root = run_dir.resolve()

    def relative(path: str | None) -> str | None:
        if path is None or not Path(path).exists() or not Path(path).resolve().is_relative_to(root):
            return path  # a hub id, or a checkpoint outside the run
        return Path(path).resolve().relative_to(root).as_posix()

    return {"model": relative(policy.model), "adapter": relative(policy.adapter), "name": policy.name}


def _policy_from_record(record: dict[str, Any], run_dir: Path) -> Policy:
    def absolute(path: str | None) -> str | None:
        if path is None or Path(path).is_absolute() or not (run_dir / Path(path).parts[0]).exists():
            return path
        return str(run_dir / path)

    return Policy(absolute(record["model"]), absolute(record["adapter"]), record["name"])


# --- resuming with a changed config ------------------------------------------------------------

# what a changed key alters: the longest matching prefix wins; "" nothing that is finished
# (generation knobs that give the same tokens, logging, the number of iterations still to run)
AFFECTS = {
    "seed": "bc eval iter",  # the user's clone: the training tasks' turns, in sft.seed's order
    "model": "bc eval iter user",
    "env": "bc eval iter user",
    "assistant": "bc eval iter",
    "model.backend": "eval iter",  # generation only: behaviour cloning and the user's clone train locally
    "model.vllm": "eval iter",
    "model.openai": "eval iter",
    "model.batch_size": "",
    "model.kv_cache": "",
    "model.wave_tokens": "",
    "sampling": "iter",
    "user": "eval iter",
    "user.adapter": "user eval iter",
    "user.clone_epochs": "user eval iter",
    "rollout": "iter",
    "rollout.num_envs": "",
    "rollout.episodes": "",
    "sft": "bc user iter",
    "sft.epochs": "iter",
    "sft.followup_weight": "bc iter",  # the user's clone is trained without it  # behaviour cloning and the user's clone pass rest.bc.epochs / user.clone_epochs
    "sft.logging_steps": "",
    "sft.checkpoint_steps": "",
    "eval": "eval",
    "wandb": "",
    "run_dir": "",
    "rest": "iter",
    "rest.bc": "bc",
    "rest.iterations": "",
    "rest.eval_each_iteration": "",
    "rest.final_episodes_per_point": "final",
    "rest.final_splits": "final",
}


def _affects(key: str) -> set[str]:
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in AFFECTS:
            return set(AFFECTS[prefix].split())
    return {"bc", "user", "eval", "iter"}


def finished_stages(run_dir: Path, iterations: tuple[int, ...] = ()) -> list[tuple[str, set[str]]]:
    """The finished stages in run order, each with its kinds (bc, user, eval, final, iter). An
    evaluation is of kind ``final`` when it is the run's last under each count of ``iterations``
    (the saved and the resumed one: a change of the final evaluation's settings alters it only
    then); every evaluation is when no count is known."""
    names = ["bc", "user", "start"] + sorted(
        (p.name for p in run_dir.glob("iter-*")), key=lambda n: int(n.split("-")[1])
    )
    stages = []
    for name in names:
        kinds = {"bc": {"bc"}, "user": {"user"}}.get(name, {"iter"} if name.startswith("iter-") else set())
        if kinds and (run_dir / name / DONE).exists():
            stages.append((name, kinds))
        if (run_dir / name / "eval" / DONE).exists():
            final = all(was_final(name, n) for n in iterations)
            stages.append((f"{name}/eval", {"eval", "final"} if final else {"eval"}))
    return stages


def was_final(name: str, iterations: int) -> bool:
    """Whether stage ``name``'s evaluation is the last of a run of ``iterations`` iterations (the
    start's, ``bc`` or ``start``, when there are none)."""
    return name == f"iter-{iterations}" if iterations > 0 else name in ("bc", "start")


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The dotted keys whose values differ, each with ``saved -> current``."""
    out = {}
    for key in dict.fromkeys([*saved, *current]):
        a, b, name = saved.get(key), current.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            out.update(config_differences(a, b, f"{name}."))
        elif a != b:
            out[name] = f"{a!r} -> {b!r}"
    return out


def resume_check(saved: dict[str, Any], current: dict[str, Any], run_dir: Path) -> dict[str, str]:
    """The changed keys a resumed run may take (none alters a finished stage); a ``ConfigError``
    naming the finished stages a change would invalidate otherwise."""
    changed = config_differences(saved, current)
    before, now = _iterations(saved), _iterations(current)
    stages = finished_stages(run_dir, tuple(n for n in (before, now) if n is not None))
    for key, change in changed.items():
        kinds = _affects(key)
        first = next((i for i, (_, k) in enumerate(stages) if k & kinds), None)
        if first is not None:
            invalid = ", ".join(name for name, _ in stages[first:])
            raise ConfigError(
                f"{key} ({change}) would change finished stages {invalid} of {run_dir}: resume with "
                "the saved value, or delete those stages' folders to redo them, or use a new run_dir"
            )
    # fewer iterations can make a finished evaluation the last one, which a larger final one replaces
    large = (current.get("rest") or {}).get("final_episodes_per_point")
    for name, _ in stages:
        stage = name.removesuffix("/eval")
        if (
            large
            and name != stage
            and None not in (before, now)
            and was_final(stage, now)
            and not was_final(stage, before)
        ):
            raise ConfigError(
                f"rest.iterations ({before} -> {now}) makes the finished {name} the final evaluation, which "
                f"ran without rest.final_episodes_per_point ({large}): delete {run_dir / name} to redo it, "
                "or resume with the saved value"
            )
    return changed


def _iterations(config: dict[str, Any]) -> int | None:
    value = (config.get("rest") or {}).get("iterations")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def prepare_run_dir(cfg: RunConfig, resume: bool) -> Path:
    """Create the run directory and save the resolved config; on resume, check the saved one."""
    run_dir = Path(cfg.run_dir)
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        if not resume:
            raise ConfigError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another run_dir")
        changed = resume_check(to_dict(load_config(saved, check=False)), to_dict(cfg), run_dir)
        shown = {k: v for k, v in changed.items() if k != "run_dir"}
        if shown:
            print(
                "[resume] with changed settings that no finished stage depends on: "
                + ", ".join(f"{k} ({v})" for k, v in shown.items())
            )
    elif resume and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir} holds files but no {CONFIG_FILE}: it is not a run directory to resume")
    save_config(cfg, saved)
    return run_dir
