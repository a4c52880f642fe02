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
    def from_dict(cls, d: dict[str, Any]) -> "Episode":
        return cls(**d)


def read_episodes(path: str | Path) -> list[Episode]:
    """All complete episodes in a JSONL file (a torn last line is ignored)."""
    return list(_iter_episodes(Path(path)))


def _iter_episodes(path: Path) -> Iterator[Episode]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield Episode.from_dict(json.loads(line))
        except (json.JSONDecodeError, TypeError) as e:
            if number == len(lines) and not line.endswith("\n"):
                return  # torn write of a killed run
            raise ValueError(f"{path} line {number}: not an episode record ({e})") from e


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
        for e in episodes:
            if e.episode_id in self.done_ids:
                continue
            self._file.write(e.to_json() + "\n")
            self.done_ids.add(e.episode_id)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "EpisodeLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
