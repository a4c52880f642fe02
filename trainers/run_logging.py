"""Run logging: JSON Lines files in the run directory, always; Weights & Biases when enabled.

``metrics.jsonl`` holds one line per ``log`` call (``{"step": ..., **metrics}``),
``tables.jsonl`` one per table or dialogue sample, ``images.jsonl`` one per plot. The
wandb run lives in ``<run_dir>/wandb``, offline unless ``$WANDB_MODE`` says otherwise or
the user is logged in (``$WANDB_API_KEY`` or a netrc entry): an offline run makes no
network call and can be uploaded later with ``wandb sync <run_dir>/wandb/offline-run-*``.
A resumed run (same ``run_dir``) continues the same wandb run id.
"""

from __future__ import annotations

import json
import netrc
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence
from urllib.parse import urlparse

if TYPE_CHECKING:
    from trainers.episodes import Episode
    from trainers.evaluate import EvalReport

ID_FILE = "wandb_run_id"
MODES = ("auto", "offline", "online", "disabled")
WANDB_ENV_MODES = ("offline", "online", "disabled", "dryrun", "run", "shared")  # what wandb accepts in $WANDB_MODE


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays and paths as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot log a value of type {type(value).__name__}: {value!r}")


def logged_in() -> bool:
    """True when wandb credentials are at hand: ``$WANDB_API_KEY`` or a netrc entry for the host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str = "auto") -> str:
    """The wandb mode: an explicit one; else ``$WANDB_MODE``; else online if logged in, else offline."""
    if mode not in MODES:
        raise ValueError(f"wandb mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip()
    if env and env not in WANDB_ENV_MODES:
        raise ValueError(f"$WANDB_MODE is {env!r}: set it to one of {WANDB_ENV_MODES}, or unset it")
    return env or ("online" if logged_in() else "offline")


class RunLogger:
    """Logs metrics, tables, dialogue samples and plots of one run.

    Args:
        run_dir: the run directory (the JSON Lines files and ``wandb/`` go there).
        config: the resolved run config (a dataclass or a dict), stored with the wandb run.
        use_wandb: False: the JSON Lines files only.
        project, entity, mode: the wandb project, entity and mode (see ``resolve_mode``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: Any = None,
        use_wandb: bool = True,
        project: str = "clarify-env",
        entity: str | None = None,
        mode: str = "auto",
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None and not isinstance(config, Mapping):
            from trainers.config_loading import to_dict

            config = to_dict(config)
        self.config = dict(config or {})
        self.mode = resolve_mode(mode) if use_wandb else "disabled"
        self.run = None if self.mode == "disabled" else self._start_wandb(project, entity)

    def _start_wandb(self, project: str, entity: str | None) -> Any:
        # Quiet by default; and our package named "agents" looks like the OpenAI Agents SDK to
        # wandb, which would then advertise Weave on every run.
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        if "WANDB_MODE" in os.environ and not os.environ["WANDB_MODE"].strip():
            del os.environ["WANDB_MODE"]  # set but empty counts as unset (wandb.Settings rejects "")
        import wandb

        id_file = self.run_dir / ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, init_timeout=60)
        kwargs = dict(
            project=project,
            entity=entity,
            dir=str(self.run_dir),
            config=self.config,
            name=self.run_dir.name,
            id=run_id,
            resume="allow",
            settings=settings,
        )
        try:
            return wandb.init(mode=self.mode, **kwargs)
        except Exception as e:  # online but the server cannot be reached: keep the run, offline
            if self.mode != "online":
                raise
            print(f"[run_logging] wandb online init failed ({e}); logging offline instead")
            self.mode = "offline"
            return wandb.init(mode="offline", **kwargs)

    def _append(self, name: str, record: Mapping[str, Any]) -> None:
        with (self.run_dir / name).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=_jsonable, ensure_ascii=False) + "\n")

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Scalar metrics at ``step`` (e.g. the ReST iteration): metrics.jsonl and wandb."""
        self._append("metrics.jsonl", {"step": step, "time": time.time(), **metrics})
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def log_table(self, key: str, rows: Sequence[Mapping[str, Any]], step: int) -> None:
        """Rows of flat dicts (same keys) as a table: tables.jsonl and a ``wandb.Table``."""
        rows = [dict(r) for r in rows]
        self._append("tables.jsonl", {"step": step, "key": key, "rows": rows})
        if self.run is not None and rows:
            import wandb

            columns = list(rows[0])
            table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
            self.run.log({key: table}, step=step)

    def log_dialogues(self, key: str, episodes: Sequence[Episode], step: int, limit: int = 16) -> None:
        """The first ``limit`` episodes as readable dialogues (prices, moves, reward, transcript)."""
        rows = [
            {
                "episode_id": e.episode_id,
                "task_id": e.task_id,
                "question_price": e.costs["question"],
                "word_price": e.costs["word"],
                "moves": " ".join(e.moves),
                "reward": e.reward,
                "transcript": "\n".join(f"{m['role'].upper()}: {m['content']}" for m in e.messages),
            }
            for e in episodes[:limit]
        ]
        self.log_table(key, rows, step)

    def log_images(self, images: Mapping[str, str | Path], step: int) -> None:
        """PNG files by key: their paths in images.jsonl, the images in wandb."""
        for key, path in images.items():
            self._append("images.jsonl", {"step": step, "key": key, "path": str(path)})
        if self.run is not None and images:
            import wandb

            self.run.log({k: wandb.Image(str(p)) for k, p in images.items()}, step=step)

    def log_eval(self, report: EvalReport, step: int, prefix: str = "eval") -> None:
        """An evaluation: its summary metrics, its per-point table and (once written) its plots."""
        self.log({f"{prefix}/{k}": v for k, v in report.summary().items()}, step)
        self.log_table(f"{prefix}/table", [p.to_row() for p in report.points], step)
        self.log_images({f"{prefix}/{k}": v for k, v in report.files.items() if v.suffix == ".png"}, step)

    def finish(self) -> None:
        """Close the wandb run and wait until its files in ``<run_dir>/wandb`` are complete."""
        if self.run is not None:
            import wandb

            self.run.finish()
            wandb.teardown()  # finish() can return before wandb-core has written the run file out
            self.run = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()
