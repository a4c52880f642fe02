"""Episode records and the JSON Lines file they stream to.

One line per finished episode. A killed run keeps every line it finished; ``EpisodeLog``
reopens the file, drops a torn last line, and reports the ids already done so a resumed
run skips them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator


@dataclass
class Episode:
    """Everything about one finished dialogue.

    ``chat`` is the assistant's full conversation in its own prompt format (system prompt,
    user and assistant turns, ending with its final message): what SFT trains on, with
    loss on the assistant turns only. ``messages`` is the env's transcript.
    """

    episode_id: str
    group_id: str
    sample_index: int
    task_id: str
    interpretation: int
    costs: dict[str, float]
    messages: list[dict[str, str]]
    chat: list[dict[str, str]]
    moves: list[str]
    reward: float
    expected_reward: float
    components: dict[str, float]
    outcome: str
    policy: str
    assistant_token_ids: list[list[int]] = field(default_factory=list)
    user_token_ids: list[list[int]] = field(default_factory=list)
    iteration: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def first_move(self) -> str:
        return self.moves[0] if self.moves else "ERROR"

    def to_json(self) -> str:
        # every field already holds JSON types: no asdict deep copy (a third of a scripted rollout's time)
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)}, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        """An episode from its JSON record; a field of the wrong type is a ``TypeError`` naming it."""
        if not isinstance(d, dict):
            raise TypeError(f"an episode record is a JSON object, got {type(d).__name__}")
        for name, kind in _FIELD_TYPES.items():
            value = d.get(name)
            if name in d and (isinstance(value, bool) or not isinstance(value, kind)):
                raise TypeError(f"field {name!r} must be {_KIND_NAMES[kind]}, got {value!r}")
        return cls(**d)


def play_order(episode: Episode) -> tuple[int, int]:
    """Sort key: the order a rollout engine plays and returns episodes in (group ``g<n>``, then sample)."""
    return int(episode.group_id.removeprefix("g")), episode.sample_index


_FIELD_TYPES = {
    "episode_id": str,
    "group_id": str,
    "sample_index": int,
    "task_id": str,
    "interpretation": int,
    "costs": dict,
    "messages": list,
    "chat": list,
    "moves": list,
    "reward": (int, float),
    "expected_reward": (int, float),
    "components": dict,
    "outcome": str,
    "policy": str,
}
_KIND_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "a list", (int, float): "a number"}


def read_episodes(path: str | Path) -> list[Episode]:
    """All complete episodes in a JSONL file being written (a torn last line, from a kill
    mid-write, is ignored; any other bad line is a ``ValueError`` naming the file and line)."""
    return list(_iter_episodes(Path(path), allow_torn_tail=True))


def read_finished_episodes(path: str | Path, expected: int) -> list[Episode]:
    """The episodes of a finished stage's file, which must hold exactly ``expected`` complete
    records (its ``done.json`` count): a torn or missing line there means the file was damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: it holds a finished stage's episodes (delete the stage's folder to redo it)"
        )
    episodes = list(_iter_episodes(path, allow_torn_tail=False))
    if len(episodes) != expected:
        raise ValueError(
            f"{path} holds {len(episodes)} episodes, but its stage finished {expected}: the file was "
            "damaged (delete the stage's folder to redo it)"
        )
    return episodes


def _iter_episodes(path: Path, allow_torn_tail: bool) -> Iterator[Episode]:
    if not path.exists():
        return
    try:
        with path.open(encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield Episode.from_dict(json.loads(line))
        except (json.JSONDecodeError, TypeError, RecursionError) as e:
            if allow_torn_tail and number == len(lines) and not line.endswith("\n"):
                return  # torn write of a killed run
            raise ValueError(f"{path} line {number}: not an episode record ({e})") from None


class EpisodeLog:
    """Append-only episode file with resume: ``done_ids`` holds what is already written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        episodes = read_episodes(self.path)
        self.done_ids = {e.episode_id for e in episodes}
        self._truncate_torn_tail()
        self._file = self.path.open("a", encoding="utf-8")

    def _truncate_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def write(self, episodes: Iterable[Episode]) -> None:
        """Append and flush to disk (fsync), so a kill loses nothing written."""
        try:
            for e in episodes:
                if e.episode_id in self.done_ids:
                    continue
                self._file.write(e.to_json() + "\n")
                self.done_ids.add(e.episode_id)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as e:
            raise OSError(
                f"cannot write episodes to {self.path} ({e}); the episodes on file are kept: free disk space and resume"
            ) from e

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EpisodeLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
