"""Traffic policies persisted in the model repository, next to the model they route.

    <repo>/<model>/traffic.json            the current policy (TrafficPolicy.to_dict, indented JSON);
                                           absent = no policy: the highest ready version serves
    <repo>/<model>/traffic.history.jsonl   append-only, one JSON object per change:
        {"time": "2025-05-01T12:00:00.000Z", "action": "split", "policy": {...} | null,
         "previous": {...} | null, "source": "admin@127.0.0.1:5555"}
    <repo>/<model>/traffic.history.1.jsonl the entries before those (serving/traffic/history.py): the
                                           history is bounded by rotation to the newest `history_limit`
                                           to 2 × `history_limit` entries, and a write never re-reads it

The format is documented, with an example, in docs/traffic-policy.md.

Writes are atomic and durable: the new policy goes to a temp file in the model folder (flush, fsync),
os.replace() puts it in place, the folder is fsynced, then the history line is appended (fsync). A
reader therefore sees the old file or the new one, never a mix; a crash leaves at most a stray
`.traffic.json.*.tmp`, which readers never open and a later save removes. Writers serialise on a
threading.Lock (this store) and an flock on the model folder (other processes on the host); between
hosts os.replace still makes the last writer win whole.

Rollback is a stack. Replaying the kept history, every change (split, promote, shadow, clear, edit, …) pushes
an entry and every rollback pops one; `rollback()` restores the `previous` policy of the entry on top, so
successive rollbacks walk back through the changes in reverse order (rolling back twice does not toggle).
Nothing on the stack → PolicyError. Restoring a `previous` of null removes traffic.json (default routing).

A traffic.json edited by hand (or a crash between the rename and the history append) makes the file
differ from what the history says is current. `save`, `clear` and `rollback` first record such a file as
an `edit` entry (source "file"), so a rollback undoes the hand edit too; a poller calls `reconcile()`.

`load` raises PolicyError naming the file and the field for invalid content; the caller keeps the last
good policy it holds. This module never touches a policy object it has handed out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from serving.errors import NotFound
from serving.traffic.history import (
    HISTORY_FILE,
    ROLLBACK,
    ROTATED_FILE,
    HistoryEntry,
    HistoryLog,
    read_history,
    rollback_stack,
)
from serving.traffic.policy import PolicyError, TrafficPolicy

__all__ = ["HISTORY_FILE", "ROLLBACK", "ROTATED_FILE", "HistoryEntry", "PolicyStore", "rollback_stack"]

log = logging.getLogger(__name__)

POLICY_FILE = "traffic.json"
EDIT = "edit"
CLEAR = "clear"
FILE_SOURCE = "file"
_TEMP_PREFIX = f".{POLICY_FILE}."
_TEMP_SUFFIX = ".tmp"
_STALE_TEMP_S = 60.0  # a temp file this old belongs to a writer that crashed

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FileSignature(NamedTuple):
    """Cheap change detection for traffic.json: os.replace gives every save a new inode."""

    mtime_ns: int
    size: int
    inode: int


def parse_policy(path: Path, raw: bytes) -> TrafficPolicy:
    """The policy in the bytes of `path`; PolicyError starting with the path and naming what is wrong."""
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        return TrafficPolicy.from_dict(data)
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise PolicyError(
            f"{path}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PolicyError(f"field {key!r} appears more than once")
        result[key] = value
    return result


def policy_text(policy: TrafficPolicy) -> str:
    """traffic.json's content for `policy`: indented, one field per line, trailing newline."""
    return json.dumps(policy.to_dict(), indent=2) + "\n"


class PolicyStore:
    """Reads and writes `<repository>/<model>/traffic.json` and its history."""

    def __init__(self, repository: Path, clock: Clock = _utc_now, history_limit: int = 1000) -> None:
        self.repository = repository
        self._clock = clock
        self._lock = threading.Lock()
        self._history = HistoryLog(history_limit)  # bounded, rotated; writes never re-read it

    # ---- paths and reading ---------------------------------------------------------------------

    def policy_path(self, model: str) -> Path:
        return self._folder(model) / POLICY_FILE

    def history_path(self, model: str) -> Path:
        return self._folder(model) / HISTORY_FILE

    def file_signature(self, model: str) -> FileSignature | None:
        """(mtime_ns, size, inode) of traffic.json, None if there is none; compare to detect a change."""
        try:
            st = os.stat(self.policy_path(model))
        except FileNotFoundError:
            return None
        return FileSignature(st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self, model: str) -> TrafficPolicy | None:
        """The model's policy; None without traffic.json; PolicyError (naming the file) if it is invalid."""
        path = self.policy_path(model)
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
        return parse_policy(path, raw)

    def history(self, model: str, limit: int | None = None) -> list[HistoryEntry]:
        """The latest `limit` changes (all that are kept if None), oldest first."""
        entries = read_history(self._folder(model))
        if limit is None:
            return entries
        return entries[-limit:] if limit > 0 else []

    # ---- changes -------------------------------------------------------------------------------

    def save(
        self,
        model: str,
        policy: TrafficPolicy,
        action: str,
        source: str,
        *,
        reason: str = "",
        evidence: Mapping[str, Any] | None = None,
    ) -> HistoryEntry:
        """Make `policy` the model's policy and record `action` (split, promote, shadow, …) by `source`,
        with the `reason` and `evidence` of a decision (a rollout's) in the history entry."""
        if not action or action == ROLLBACK:
            raise PolicyError(f"action: {action!r} cannot be saved; use rollback() to roll back")
        return self._change(model, action, source, lambda stack, current: policy, reason, evidence)

    def clear(self, model: str, source: str) -> HistoryEntry:
        """Remove the policy (default routing: the highest ready version); a rollback restores it."""
        return self._change(model, CLEAR, source, lambda stack, current: None)

    def rollback(self, model: str, source: str) -> HistoryEntry:
        """Restore the policy before the latest change not yet rolled back; the entry's `policy` is it."""

        def target(stack: list[HistoryEntry], current: TrafficPolicy | None) -> TrafficPolicy | None:
            if not stack:
                raise PolicyError(f"{self.history_path(model)}: nothing to roll back to")
            return stack[-1].previous

        return self._change(model, ROLLBACK, source, target)

    def reconcile(self, model: str, source: str = FILE_SOURCE) -> HistoryEntry | None:
        """Record a traffic.json changed outside this store as an `edit` entry; None if it matches
        the history (or is invalid: then there is nothing trustworthy to record)."""
        folder = self._existing_folder(model)
        with self._locked(folder) as dir_fd:
            return self._record_edit(folder, self._history.stack(folder), source, dir_fd)[1]

    # ---- internals -----------------------------------------------------------------------------

    def _change(
        self,
        model: str,
        action: str,
        source: str,
        decide: Callable[[list[HistoryEntry], TrafficPolicy | None], TrafficPolicy | None],
        reason: str = "",
        evidence: Mapping[str, Any] | None = None,
    ) -> HistoryEntry:
        folder = self._existing_folder(model)
        with self._locked(folder) as dir_fd:
            current, _ = self._record_edit(folder, self._history.stack(folder), FILE_SOURCE, dir_fd)
            new = decide(self._history.stack(folder), current)
            _remove_stale_temps(folder)
            _write_policy(folder / POLICY_FILE, new, dir_fd)
            entry = HistoryEntry(self._now(), action, new, current, source, reason, evidence)
            self._history.append(folder, entry, dir_fd)
        log.info("traffic policy of '%s': %s by %s", model, action, source)
        return entry

    def _record_edit(
        self, folder: Path, stack: list[HistoryEntry], source: str, dir_fd: int
    ) -> tuple[TrafficPolicy | None, HistoryEntry | None]:
        """The current policy, recording an `edit` first if the file differs from the history."""
        recorded = stack[-1].policy if stack else None
        try:
            on_disk = self.load(folder.name)
        except PolicyError as exc:
            log.warning("%s; the change replaces it", exc)
            return recorded, None
        if on_disk == recorded:
            return recorded, None
        edit = HistoryEntry(self._now(), EDIT, on_disk, recorded, source)
        self._history.append(folder, edit, dir_fd)
        return on_disk, edit

    def _folder(self, model: str) -> Path:
        if not model or model in (".", "..") or any(c in model for c in "/\\\0"):
            raise PolicyError(f"model: {model!r} is not a model folder name")
        return self.repository / model

    def _existing_folder(self, model: str) -> Path:
        folder = self._folder(model)
        if not folder.is_dir():
            raise NotFound(f"{folder}: no such model folder in the repository")
        return folder

    def _now(self) -> datetime:
        now = self._clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

    @contextlib.contextmanager
    def _locked(self, folder: Path) -> Iterator[int]:
        """This store's lock, then an exclusive flock on the model folder (other processes)."""
        with self._lock:
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(dir_fd, fcntl.LOCK_EX)
                yield dir_fd
            finally:
                os.close(dir_fd)  # releases the flock


def _write_policy(path: Path, policy: TrafficPolicy | None, dir_fd: int) -> None:
    """Atomically replace (or remove, for None) traffic.json, then make the rename durable."""
    if policy is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.fsync(dir_fd)
        return
    mode = _mode_of(path)
    fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(policy_text(policy))
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    os.fsync(dir_fd)


def _mode_of(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return 0o644


def _remove_stale_temps(folder: Path) -> None:
    deadline = time.time() - _STALE_TEMP_S  # file mtimes are wall-clock times
    for temp in folder.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            if temp.stat().st_mtime < deadline:
                temp.unlink()
                log.info("%s: removed a temp file left by an interrupted write", temp)
