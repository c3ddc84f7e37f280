"""Operator actions on a run's timeline: load / unload a model, or run a shell command.

    load     RepositoryModelLoad(model, parameters)      standard KServe/Triton repository extension
    unload   RepositoryModelUnload(model, parameters)
    exec     a shell command, e.g. ``serving ctl split digits 1=50 3=50``; fails on a non-zero exit

New kinds register in ACTION_KINDS: a parser from the scenario entry to an Action. Times are seconds
from the start of measurement; each action's start, end, outcome and output are recorded.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from loadtests.wire import Metadata, ParamValue, aio_channel, repository_call

OUTPUT_TAIL = 2000


class ActionError(ValueError):
    """A malformed action in a scenario."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str


class Action(Protocol):
    @property
    def at_s(self) -> float: ...

    def describe(self) -> str: ...

    async def perform(self, url: str) -> Outcome: ...


@dataclass(frozen=True)
class RepositoryAction:
    at_s: float
    kind: str  # "load" | "unload"
    model: str
    parameters: Mapping[str, ParamValue] = field(default_factory=dict)
    metadata: Metadata = ()
    timeout_s: float = 60.0

    def describe(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.parameters.items())
        return f"{self.kind} {self.model}" + (f" ({params})" if params else "")

    async def perform(self, url: str) -> Outcome:
        channel = aio_channel(url)
        try:
            await repository_call(
                self.kind, channel, self.model, self.parameters, self.metadata, self.timeout_s
            )
            return Outcome(True, "ok")
        except grpc.aio.AioRpcError as err:
            return Outcome(False, f"{err.code().name}: {err.details()}")
        finally:
            await channel.close()


@dataclass(frozen=True)
class ExecAction:
    at_s: float
    command: str
    timeout_s: float = 60.0

    def describe(self) -> str:
        return f"exec {self.command}"

    async def perform(self, url: str) -> Outcome:
        process = await asyncio.create_subprocess_shell(
            self.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            return Outcome(False, f"timed out after {self.timeout_s:g}s")
        text = output.decode("utf-8", "replace").strip()[-OUTPUT_TAIL:]
        return Outcome(process.returncode == 0, f"exit {process.returncode}" + (f": {text}" if text else ""))


def _parameters(entry: Mapping[str, Any]) -> dict[str, ParamValue]:
    raw = entry.get("parameters", {})
    if not isinstance(raw, dict) or not all(isinstance(v, bool | int | str) for v in raw.values()):
        raise ActionError(f"action {entry}: parameters must map names to strings, integers or booleans")
    return {str(k): v for k, v in raw.items()}


def _metadata(entry: Mapping[str, Any]) -> Metadata:
    raw = entry.get("metadata", {})
    if not isinstance(raw, dict):
        raise ActionError(f"action {entry}: metadata must map header names to strings")
    return tuple((str(k).lower(), str(v)) for k, v in raw.items())


def _repository(kind: str) -> Callable[[float, Mapping[str, Any]], Action]:
    def parse(at_s: float, entry: Mapping[str, Any]) -> Action:
        if not isinstance(entry.get("model"), str):
            raise ActionError(f'{kind} action at {at_s:g}s needs "model"')
        return RepositoryAction(
            at_s,
            kind,
            entry["model"],
            _parameters(entry),
            _metadata(entry),
            float(entry.get("timeout_s", 60.0)),
        )

    return parse


def _exec(at_s: float, entry: Mapping[str, Any]) -> Action:
    command = entry.get("command")
    if isinstance(command, list):
        command = shlex.join(str(part) for part in command)
    if not isinstance(command, str) or not command.strip():
        raise ActionError(f'exec action at {at_s:g}s needs "command" (a string or a list of arguments)')
    return ExecAction(at_s, command, float(entry.get("timeout_s", 60.0)))


ACTION_KINDS: dict[str, Callable[[float, Mapping[str, Any]], Action]] = {
    "load": _repository("load"),
    "unload": _repository("unload"),
    "exec": _exec,
}


def parse_action(at_s: float, entry: Mapping[str, Any]) -> Action:
    kind = entry.get("type")
    if kind not in ACTION_KINDS:
        raise ActionError(
            f"action at {at_s:g}s: unknown type {kind!r}; known: {', '.join(sorted(ACTION_KINDS))}"
        )
    return ACTION_KINDS[str(kind)](at_s, entry)


@dataclass(frozen=True)
class ActionRecord:
    at_s: float
    description: str
    started_s: float
    finished_s: float
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "at_s": self.at_s,
            "action": self.description,
            "started_s": round(self.started_s, 4),
            "finished_s": round(self.finished_s, 4),
            "ok": self.ok,
            "detail": self.detail,
        }


async def run_actions(
    actions: Sequence[Action], url: str, zero: float, on_record: Callable[[ActionRecord], None] | None = None
) -> list[ActionRecord]:
    """Perform each action at zero + at_s (monotonic), in order; a slow action delays the next."""
    records = []
    for action in sorted(actions, key=lambda a: a.at_s):
        delay = zero + action.at_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        started = time.monotonic() - zero
        outcome = await action.perform(url)
        record = ActionRecord(
            action.at_s, action.describe(), started, time.monotonic() - zero, outcome.ok, outcome.detail
        )
        records.append(record)
        if on_record:
            on_record(record)
    return records
