"""Poll mode (`--model-control-mode poll --repository-poll-secs N`): the server follows the repository.

Every N seconds a scan (on a worker thread) takes a snapshot of each model folder: the bytes of
config.pbtxt and, for every file under its numeric version folders, (path, size, mtime). A model whose
snapshot differs from what is loaded is (re)loaded through ModelControl — new versions load and warm up
while the old ones serve, removed versions drain and unload — and a model whose folder or config.pbtxt
disappeared is unloaded. A model is acted on only once its snapshot looked the SAME in two consecutive
polls: a file still being copied changes size or mtime between polls and is not loaded half-written.
(A copy that stalls for longer than a poll period can still be seen as stable; copy into place with a
rename to be safe. A half-copied file that does load fails alone: the versions serving keep serving.)

Traffic policies need no settling (the server writes traffic.json atomically, and an invalid file is
rejected and retried at the next change): when the file's signature changes, the poller records a hand
edit in the history (reconcile) and puts the new policy in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from serving.errors import ServingError
from serving.lifecycle.control import ModelControl
from serving.lifecycle.repository import CONFIG_FILE
from serving.traffic.router import TrafficControl
from serving.traffic.store import FileSignature

log = logging.getLogger("serving.poll")

FileStamp = tuple[str, int, int]  # (path relative to the model folder, size, mtime_ns)


@dataclass(frozen=True)
class ModelSnapshot:
    config: bytes
    files: tuple[FileStamp, ...]


def scan_model(folder: Path) -> ModelSnapshot | None:
    """The snapshot of one model folder; None if it has no readable config.pbtxt."""
    try:
        config = (folder / CONFIG_FILE).read_bytes()
        versions = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    except OSError:  # no config.pbtxt, or the folder went away during the scan
        return None
    files: list[FileStamp] = []
    for version in versions:
        for directory, _dirs, names in os.walk(version):
            for name in names:
                path = Path(directory) / name
                with contextlib.suppress(FileNotFoundError):  # removed between the listing and stat
                    st = path.stat()
                    files.append((str(path.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return ModelSnapshot(config, tuple(sorted(files)))


def scan_repository(root: Path) -> dict[str, ModelSnapshot]:
    snapshots: dict[str, ModelSnapshot] = {}
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError as exc:
        log.error("%s: cannot list the model repository: %s", root, exc)
        return snapshots
    for folder in folders:
        snapshot = scan_model(folder)
        if snapshot is not None:
            snapshots[folder.name] = snapshot
    return snapshots


class RepositoryPoller:
    def __init__(
        self, root: Path, control: ModelControl, traffic: TrafficControl | None, interval_s: float
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._root = root
        self._control = control
        self._traffic = traffic
        self._interval_s = interval_s
        self._previous: dict[str, ModelSnapshot] = {}  # the last poll's scan
        self._applied: dict[str, ModelSnapshot] = {}  # what each loaded model was loaded from
        self._signatures: dict[str, FileSignature | None] = {}
        self._task: asyncio.Task[None] | None = None

    def prime(self, snapshot: dict[str, ModelSnapshot]) -> None:
        """The scan taken just before the startup load: those models count as loaded from it."""
        self._previous = dict(snapshot)
        self._applied = dict(snapshot)
        if self._traffic is not None:
            self._signatures = {name: self._traffic.file_signature(name) for name in snapshot}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="repository-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.poll_once()
            except Exception:  # one bad poll must not end polling
                log.exception("repository poll failed")

    async def poll_once(self) -> None:
        current = await asyncio.to_thread(scan_repository, self._root)
        previous, self._previous = self._previous, current
        for name in sorted(set(current) | set(self._applied)):
            now = current.get(name)
            if now != previous.get(name):
                if now is not None:
                    log.info("model '%s' changed in the repository; waiting for it to settle", name)
                continue
            if now != self._applied.get(name):
                await self._apply(name, now)
        await self._follow_policies()

    async def _apply(self, name: str, snapshot: ModelSnapshot | None) -> None:
        if snapshot is None:
            log.info("model '%s' left the repository: unloading", name)
            del self._applied[name]
            self._signatures.pop(name, None)
            with contextlib.suppress(ServingError):
                await self._control.unload(name)
            return
        log.info("model '%s' changed in the repository: loading", name)
        self._applied[name] = snapshot
        if self._traffic is not None:
            self._signatures[name] = self._traffic.file_signature(name)
        try:
            await self._control.load(name)
        except ServingError as exc:
            log.error("model '%s': %s", name, exc)

    async def _follow_policies(self) -> None:
        if self._traffic is None:
            return
        for name in sorted(self._applied):
            signature = self._traffic.file_signature(name)
            if signature == self._signatures.get(name):
                continue
            self._signatures[name] = signature
            self._traffic.refresh(name)
            if not self._traffic.status(name).error:
                # appends to the history with fsync: off the event loop, so inference never waits on it
                await asyncio.to_thread(self._traffic.reconcile, name)
