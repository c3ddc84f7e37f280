"""The front-end ⇄ worker link in one process: frames, the slot ring, and slot ownership (a slot is
reused only once the front-end copied the reply out AND the worker let go of every view of its inputs).
The worker side runs the real WorkerLink over a real unix socket and ring; the facade is a small fake
whose `infer` can keep the request, as a shadow copy does."""

from __future__ import annotations

import asyncio
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from serving.core.request import InferenceRequest, InferenceResponse
from serving.errors import InvalidInput, Unavailable
from serving.frontends import wire
from serving.frontends.client import SlotsFull, WorkerClient, WorkerError
from serving.frontends.link import WorkerLink
from serving.frontends.ring import ALIGN, SlotRing


class _Facade:
    """`infer` doubles the input (or raises); `keep` holds each request after replying."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.kept: list[InferenceRequest] = []
        self.gate: asyncio.Event | None = None

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        if self.gate is not None:
            await self.gate.wait()
        x = request.inputs["x"]
        if x.shape[-1] == 3:
            raise InvalidInput("three is refused")
        if self.keep:
            self.kept.append(request)
        outputs = {"y": x * 2, "s": np.array([b"ok", "\u00e9".encode()], dtype=object)}
        return InferenceResponse(request.model_name, "1", request.id, outputs)


def _request(x: np.ndarray, request_id: str = "r") -> InferenceRequest:
    return InferenceRequest(model_name="m", model_version="", id=request_id, inputs={"x": x})


async def _pair(tmp_path: Path, facade: _Facade, slots: int = 2) -> tuple[WorkerLink, WorkerClient, SlotRing]:
    link = WorkerLink(facade, None, tmp_path / "link.sock")  # type: ignore[arg-type]
    await link.start()
    ring = SlotRing(tmp_path / "ring", slots, 4096, create=True)
    client = WorkerClient(ring)
    await client.connect(link.path)
    return link, client, ring


def test_frames_round_trip() -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(wire.header_frame(wire.REPLY, 7, {"a": [1, "b"]}, b"tail"))
        reader.feed_data(wire.frame(wire.FREE, 3))
        reader.feed_eof()
        kind, number, body = await wire.read_frame(reader)
        header, tail = wire.split_header(body)
        assert (kind, number, header, bytes(tail)) == (wire.REPLY, 7, {"a": [1, "b"]}, b"tail")
        assert await wire.read_frame(reader) == (wire.FREE, 3, b"")
        with pytest.raises(asyncio.IncompleteReadError):
            await wire.read_frame(reader)

    asyncio.run(run())


def test_ring_is_shared_and_hands_out_each_slot_once(tmp_path: Path) -> None:
    ring = SlotRing(tmp_path / "ring", 2, ALIGN * 2, create=True)
    other = SlotRing(tmp_path / "ring", 2, ALIGN * 2, create=False)
    ring.unlink()  # both mappings stay valid
    ring.memory[ring.start(1) : ring.start(1) + 3] = b"abc"
    assert other.memory[other.start(1) : other.start(1) + 3] == b"abc"
    assert {ring.acquire(), ring.acquire()} == {0, 1} and ring.acquire() is None
    ring.release(1)
    assert ring.acquire() == 1
    with pytest.raises(ValueError, match="multiple of"):
        SlotRing(tmp_path / "bad", 1, ALIGN + 1, create=True)


def test_replies_errors_and_large_requests(tmp_path: Path) -> None:
    async def run() -> None:
        link, client, ring = await _pair(tmp_path, _Facade())
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        reply = await client.infer(_request(x, "id-1"), "")
        y = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(2, 4)
        assert np.array_equal(y, x * 2) and reply.id == "id-1" and list(reply.outputs[0].shape) == [2, 4]
        assert reply.outputs[1].datatype == "BYTES"
        assert reply.raw_output_contents[1] == b"\x02\x00\x00\x00ok\x02\x00\x00\x00\xc3\xa9"
        with pytest.raises(WorkerError) as refused:
            await client.infer(_request(np.zeros((1, 3), np.float32)), "")
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT and "three" in refused.value.message
        with pytest.raises(SlotsFull, match="do not fit"):
            await client.infer(_request(np.zeros(2000, np.float32)), "")
        assert ring.free == 2, "every slot is free again"
        client.close()
        await link.close()

    asyncio.run(run())


def test_a_slot_whose_inputs_are_still_held_is_reused_only_once_released(tmp_path: Path) -> None:
    async def run() -> None:
        facade = _Facade(keep=True)
        link, client, ring = await _pair(tmp_path, facade, slots=1)
        await client.infer(_request(np.ones((1, 4), np.float32)), "")
        await asyncio.sleep(0.05)
        assert ring.free == 0, "the worker still holds the inputs (a shadow copy would read them)"
        with pytest.raises(SlotsFull, match="every slot"):
            await client.infer(_request(np.ones((1, 4), np.float32)), "")
        kept = facade.kept.pop()
        assert np.array_equal(kept.inputs["x"], np.ones((1, 4), np.float32)), "inputs intact until released"
        del kept
        for _ in range(50):
            if ring.free == 1:
                break
            await asyncio.sleep(0.01)
        assert ring.free == 1, "FREE came once the last view was gone"
        client.close()
        await link.close()

    asyncio.run(run())


def test_a_gone_worker_fails_waiting_requests_unavailable(tmp_path: Path) -> None:
    async def run() -> None:
        facade = _Facade()
        facade.gate = asyncio.Event()  # never set: the request waits in the worker
        link, client, _ = await _pair(tmp_path, facade)
        waiting: Any = asyncio.create_task(client.infer(_request(np.ones((1, 4), np.float32)), ""))
        await asyncio.sleep(0.05)
        await link.close()  # as when the worker dies: the link's sockets close
        with pytest.raises(Unavailable):
            await waiting
        with pytest.raises(Unavailable):
            await client.infer(_request(np.ones((1, 4), np.float32)), "")

    asyncio.run(run())


def test_a_request_cancelled_at_once_still_frees_its_slot(tmp_path: Path) -> None:
    """The CANCEL frame can reach the worker before its task ever ran: it must still answer."""

    async def run() -> None:
        link, client, ring = await _pair(tmp_path, _Facade(), slots=1)
        for _ in range(20):
            call = asyncio.create_task(client.infer(_request(np.ones((1, 4), np.float32)), ""))
            await asyncio.sleep(0)  # INFER written; then CANCEL right behind it
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            for _ in range(100):
                if ring.free == 1:
                    break
                await asyncio.sleep(0.005)
            assert ring.free == 1, "the slot came back"
        reply = await client.infer(_request(np.ones((1, 4), np.float32)), "")
        assert reply.model_name == "m"
        client.close()
        await link.close()

    asyncio.run(run())


class _Pins:
    """Stands in for cudaHostRegister (no GPU here): records each ring pinned and each one unpinned."""

    def __init__(self) -> None:
        self.pinned: list[tuple[int, str]] = []
        self.unpinned = 0

    def __call__(self, memory: mmap.mmap, what: str) -> Callable[[], None]:
        self.pinned.append((len(memory), what))

        def unpin() -> None:
            assert not memory.closed, "unpinned while still mapped"
            self.unpinned += 1

        return unpin


def test_a_pinned_ring_is_unpinned_once_its_front_end_is_gone_and_no_view_is_left(tmp_path: Path) -> None:
    async def run() -> None:
        facade, pins = _Facade(keep=True), _Pins()
        link = WorkerLink(facade, None, tmp_path / "link.sock", pins)  # type: ignore[arg-type]
        await link.start()
        ring = SlotRing(tmp_path / "ring", 2, 4096, create=True)
        client = WorkerClient(ring)
        await client.connect(link.path)
        reply = await client.infer(_request(np.ones((1, 4), np.float32)), "")
        assert reply.model_name == "m"
        assert pins.pinned == [(2 * 4096, f"front-end pid {os.getpid()}'s slot ring")], "the whole ring, once"
        client.close()  # the front-end goes while the worker still holds a request's inputs
        for _ in range(100):
            if not link.connected:
                break
            await asyncio.sleep(0.01)
        assert not link.connected
        await asyncio.sleep(0.05)
        assert pins.unpinned == 0, "a view of a slot is alive (a batch may still copy from it)"
        kept = facade.kept.pop()
        assert np.array_equal(kept.inputs["x"], np.ones((1, 4), np.float32))
        del kept
        for _ in range(100):
            if pins.unpinned:
                break
            await asyncio.sleep(0.01)
        assert pins.unpinned == 1, "unpinned once the last view was released"
        await link.close()

    asyncio.run(run())


def test_pinning_without_a_gpu_leaves_the_memory_pageable() -> None:
    from serving.backends.host_memory import pin_host_memory

    memory = mmap.mmap(-1, 4096)
    assert pin_host_memory(memory, "a test ring") is None  # this machine has no CUDA device
    memory.close()  # no buffer export left behind


def test_frontends_setting_and_flag(tmp_path: Path) -> None:
    from serving.cli import build_parser, settings_from
    from serving.config import ServerSettings

    args = build_parser().parse_args(["serve", "--model-repository", str(tmp_path), "--frontends", "3"])
    assert settings_from(args).frontends == 3
    assert ServerSettings(tmp_path).frontends == 1  # one process unless asked
    with pytest.raises(ValueError, match=r"frontends: must be within \[1, 64\], got 0"):
        ServerSettings(tmp_path, frontends=0)
