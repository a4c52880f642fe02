"""The processes a generation engine spawns, on record, so that those of a killed run can be stopped.

A vLLM engine runs in child processes (its engine core and workers) that do not watch their parent:
when a run is killed (SIGKILL, the kernel's out-of-memory killer) they live on, holding the model
and its KV cache (two Gemma 3 270M engines: 9 GB), and the resumed run starts beside them. Each
engine start writes a record (its owner, host and pid, then each new child's pid and start time)
in ``$TMPDIR/clarify-engines``; a backend starting on the same host stops the processes of records
whose owner is gone. A pid is stopped only if its start time is the recorded one, so a reused pid
is never touched.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

RECORDS_DIR = "clarify-engines"


def records_dir(folder: str | Path | None = None) -> Path:
    """Where engine records live: ``folder``, by default ``clarify-engines`` in the system temp folder."""
    return Path(folder) if folder is not None else Path(tempfile.gettempdir()) / RECORDS_DIR


def child_pids() -> set[int]:
    """The pids of this process's descendants now."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def record_children(before: set[int], folder: str | Path | None = None) -> Path | None:
    """Write a record of this process's descendants that are not in ``before`` (what an engine start
    spawned); None when there are none."""
    import psutil

    spawned = []
    for p in psutil.Process().children(recursive=True):
        if p.pid not in before:
            try:
                spawned.append(f"{p.pid} {p.create_time()!r}")
            except psutil.NoSuchProcess:
                continue
    if not spawned:
        return None
    folder = records_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=".txt", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join([f"{socket.gethostname()} {os.getpid()}", *spawned]) + "\n")
    return Path(path)


def forget(record: Path | None) -> None:
    """Delete an engine's record once its processes were shut down."""
    if record is not None:
        record.unlink(missing_ok=True)


def stop_orphaned_engines(folder: str | Path | None = None) -> list[int]:
    """Kill the recorded engine processes whose owner on this host is gone, and delete their
    records; records of live owners, of other hosts and unreadable ones are kept. Returns the pids
    killed."""
    import psutil

    killed = []
    for path in sorted(records_dir(folder).glob("*.txt")):
        try:
            owner, *children = path.read_text().splitlines()
            host, pid = owner.split()
            if host != socket.gethostname() or psutil.pid_exists(int(pid)):
                continue
            recorded = [(int(c), float(t)) for c, t in (line.split() for line in children)]
        except (OSError, ValueError):
            continue
        for child, started in recorded:
            try:
                process = psutil.Process(child)
                if process.create_time() == started:  # the same process, not a reused pid
                    process.kill()
                    killed.append(child)
            except psutil.Error:
                continue
        path.unlink(missing_ok=True)
    return killed
