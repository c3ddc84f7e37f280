"""A model's traffic policy history: entries, the rollback stack, and the bounded, rotated history files.

    <repo>/<model>/traffic.history.jsonl     the newest entries, one JSON object per line, appended
    <repo>/<model>/traffic.history.1.jsonl   the entries before them (one rotation)

The history is bounded: once the live file holds `limit` entries it is renamed over the rotated file
(one os.replace, atomic) and a new live file starts, so at least the newest `limit` and at most
2 × `limit` entries are kept. A write costs O(1) in the history's length: `HistoryLog` keeps what a
write needs (the retained entries and the rollback stack) in memory, valid while both files have the
(inode, size) it last saw; a file changed by another process is read again, once. Replaying on a
rotation is done in memory, with no file read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.traffic.policy import PolicyError, TrafficPolicy

log = logging.getLogger(__name__)

HISTORY_FILE = "traffic.history.jsonl"
ROTATED_FILE = "traffic.history.1.jsonl"
ROLLBACK = "rollback"
_HISTORY_KEYS = ("time", "action", "policy", "previous", "source")


@dataclass(frozen=True)
class HistoryEntry:
    time: datetime  # UTC
    action: str
    policy: TrafficPolicy | None  # the policy after the change (None = no policy: default routing)
    previous: TrafficPolicy | None  # the policy before it
    source: str  # who made it, free text: "admin@10.0.0.7:5555", "file"
    reason: str = ""  # why (a rollout's decision says which gate and what it measured)
    evidence: Mapping[str, Any] | None = None  # JSON-ready facts behind the decision (per-gate statistics)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "time": self.time.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "action": self.action,
            "policy": None if self.policy is None else self.policy.to_dict(),
            "previous": None if self.previous is None else self.previous.to_dict(),
            "source": self.source,
        }
        if self.reason:
            data["reason"] = self.reason
        if self.evidence is not None:
            data["evidence"] = dict(self.evidence)
        return data

    @classmethod
    def from_dict(cls, data: object) -> HistoryEntry:
        if not isinstance(data, dict) or any(key not in data for key in _HISTORY_KEYS):
            raise PolicyError(f"a history entry is an object with {', '.join(_HISTORY_KEYS)}")
        if not isinstance(data["action"], str) or not isinstance(data["source"], str):
            raise PolicyError("action and source must be strings")
        try:
            when = datetime.fromisoformat(str(data["time"]))
        except ValueError:
            raise PolicyError(f"time: not an ISO-8601 time: {data['time']!r}") from None
        evidence = data.get("evidence")
        return cls(
            time=when if when.tzinfo is not None else when.replace(tzinfo=UTC),
            action=data["action"],
            policy=_optional_policy("policy", data["policy"]),
            previous=_optional_policy("previous", data["previous"]),
            source=data["source"],
            reason=str(data.get("reason", "")),
            evidence=evidence if isinstance(evidence, dict) else None,
        )


def _optional_policy(where: str, data: object) -> TrafficPolicy | None:
    if data is None:
        return None
    try:
        return TrafficPolicy.from_dict(data)
    except PolicyError as exc:
        raise PolicyError(f"{where}.{exc}") from None


def rollback_stack(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    """Replay the history: every change pushes its entry, every rollback pops one."""
    stack: list[HistoryEntry] = []
    for entry in entries:
        if entry.action == ROLLBACK:
            if stack:
                stack.pop()
        else:
            stack.append(entry)
    return stack


def read_entries(path: Path) -> list[HistoryEntry]:
    """Every readable entry of one history file, oldest first (unreadable lines are logged, skipped)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []
    entries: list[HistoryEntry] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(HistoryEntry.from_dict(json.loads(line)))
        except (json.JSONDecodeError, PolicyError) as exc:
            log.warning("%s:%d: skipping an unreadable history entry: %s", path, number, exc)
    return entries


def read_history(folder: Path) -> list[HistoryEntry]:
    """The retained history of a model folder, oldest first: the rotated file, then the live one."""
    return read_entries(folder / ROTATED_FILE) + read_entries(folder / HISTORY_FILE)


def append_line(path: Path, record: dict[str, Any], dir_fd: int) -> None:
    """Append one JSON line with one write and fsync it; first end a line a crash left torn."""
    data = (json.dumps(record) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.fsync(dir_fd)


Signature = tuple[tuple[int, int] | None, tuple[int, int] | None]


def _signature(folder: Path) -> Signature:
    def one(path: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size

    return one(folder / ROTATED_FILE), one(folder / HISTORY_FILE)


@dataclass
class _Tail:
    signature: Signature
    rotated: list[HistoryEntry]
    live: list[HistoryEntry]
    stack: list[HistoryEntry] = field(default_factory=list)


class HistoryLog:
    """The history files of every model of one store, with what a write needs kept in memory.
    Not thread-safe on its own: the store calls it under its lock and the folder's flock."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the history limit must be >= 1, got {limit}")
        self.limit = limit
        self._tails: dict[Path, _Tail] = {}

    def stack(self, folder: Path) -> list[HistoryEntry]:
        """The rollback stack (a copy), from memory unless the files changed since this log saw them."""
        return list(self._tail(folder).stack)

    def append(self, folder: Path, entry: HistoryEntry, dir_fd: int) -> None:
        """Append `entry` (durably), then rotate if the live file is full."""
        tail = self._tail(folder)
        append_line(folder / HISTORY_FILE, entry.to_dict(), dir_fd)
        tail.live.append(entry)
        if entry.action == ROLLBACK:
            if tail.stack:
                tail.stack.pop()
        else:
            tail.stack.append(entry)
        if len(tail.live) >= self.limit:
            self._rotate(folder, tail, dir_fd)
        tail.signature = _signature(folder)

    def _tail(self, folder: Path) -> _Tail:
        signature = _signature(folder)
        tail = self._tails.get(folder)
        if tail is None or tail.signature != signature:
            rotated, live = read_entries(folder / ROTATED_FILE), read_entries(folder / HISTORY_FILE)
            tail = _Tail(signature, rotated, live, rollback_stack(rotated + live))
            self._tails[folder] = tail
        return tail

    def _rotate(self, folder: Path, tail: _Tail, dir_fd: int) -> None:
        """The live file becomes the rotated one (the older rotated entries are dropped)."""
        live = folder / HISTORY_FILE
        if len(tail.live) > self.limit:  # a history longer than the limit (an older server's): trim it
            kept = tail.live[-self.limit :]
            temp = folder / f".{ROTATED_FILE}.tmp"
            with open(temp, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(e.to_dict()) + "\n" for e in kept)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, folder / ROTATED_FILE)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(live)
            tail.live = kept
        else:
            os.replace(live, folder / ROTATED_FILE)
        os.fsync(dir_fd)
        tail.rotated, tail.live = tail.live, []
        tail.stack = rollback_stack(tail.rotated)  # what a fresh read of the retained files gives
        log.info("%s: history rotated (%d entries kept)", folder / ROTATED_FILE, len(tail.rotated))
