"""The policy history is bounded by rotation and a write costs O(1) in its length.

Cost is counted, not timed: the bytes this process read (`rchar` of /proc/self/io, every read(2) and
pread(2)) while writing, for a short and a long history.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serving.traffic.history import HISTORY_FILE, ROTATED_FILE, HistoryEntry
from serving.traffic.policy import TrafficPolicy
from serving.traffic.store import PolicyStore

MODEL = "resnet"
IO = Path("/proc/self/io")


def policy(i: int) -> TrafficPolicy:
    return TrafficPolicy({1: i + 2, 2: 1})


def bytes_read() -> int:
    fields = dict(line.split(": ") for line in IO.read_text().splitlines())
    return int(fields["rchar"])


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / MODEL / "1").mkdir(parents=True)
    return tmp_path


def write_history(repo: Path, count: int) -> None:
    """A history of `count` split entries, as an older server (or a long-lived one) would leave it."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with open(repo / MODEL / HISTORY_FILE, "w") as handle:
        for i in range(count):
            previous = policy(i - 1) if i else None
            entry = HistoryEntry(start + timedelta(seconds=i), "split", policy(i), previous, "test")
            handle.write(json.dumps(entry.to_dict()) + "\n")
    (repo / MODEL / "traffic.json").write_text(json.dumps(policy(count - 1).to_dict()))


def read_per_write(store: PolicyStore, writes: int) -> float:
    store.save(MODEL, policy(-1), "split", "warm-up")  # the first write of a process reads what is kept
    before = bytes_read()
    for i in range(writes):
        store.save(MODEL, policy(i), "split", "test")
    return (bytes_read() - before) / writes


@pytest.mark.skipif(not IO.exists(), reason="needs Linux /proc/self/io to count bytes read")
def test_write_cost_does_not_grow_with_the_history(tmp_path: Path) -> None:
    costs = {}
    for length in (10, 5_000):
        repo = tmp_path / str(length)
        (repo / MODEL / "1").mkdir(parents=True)
        write_history(repo, length)
        costs[length] = read_per_write(PolicyStore(repo, history_limit=100_000), writes=50)
    print(f"\nbytes read per policy write: {costs}")
    # each write reads traffic.json (a few hundred bytes) and one byte of the history, whatever its length;
    # re-reading a 5,000-entry history (~1 MB) once per write is what this would catch
    assert costs[5_000] <= costs[10] + 64, costs
    assert costs[5_000] < 2_000, costs


def test_rotation_keeps_the_newest_entries(repo: Path) -> None:
    store = PolicyStore(repo, history_limit=5)
    for i in range(12):
        store.save(MODEL, policy(i), "split", f"writer {i}")
    folder = repo / MODEL
    assert lines(folder / ROTATED_FILE) == 5 and lines(folder / HISTORY_FILE) == 2
    sources = [entry.source for entry in store.history(MODEL)]
    assert sources == [f"writer {i}" for i in range(5, 12)]  # newest kept, oldest rotated away
    assert store.history(MODEL, limit=3)[-1].policy == policy(11)
    assert PolicyStore(repo, history_limit=5).history(MODEL) == store.history(MODEL)  # as a restart reads


def test_rollback_works_across_a_rotation(repo: Path) -> None:
    store = PolicyStore(repo, history_limit=3)
    for i in range(3):  # the third write fills the live file: it is rotated, the live file starts empty
        store.save(MODEL, policy(i), "split", "test")
    assert lines(repo / MODEL / HISTORY_FILE) == 0 and lines(repo / MODEL / ROTATED_FILE) == 3
    assert store.rollback(MODEL, "test").policy == policy(1)
    assert store.load(MODEL) == policy(1)
    restarted = PolicyStore(repo, history_limit=3)  # a new process replays the kept files
    assert restarted.rollback(MODEL, "test").policy == policy(0)
    assert store.rollback(MODEL, "test").policy is None  # this store sees the other's write, reads again
    assert store.load(MODEL) is None


def test_a_long_history_left_by_an_older_server_is_trimmed_on_the_next_write(repo: Path) -> None:
    write_history(repo, 2_500)
    store = PolicyStore(repo, history_limit=100)
    store.save(MODEL, policy(9_999), "split", "test")
    assert lines(repo / MODEL / HISTORY_FILE) == 0 and lines(repo / MODEL / ROTATED_FILE) == 100
    assert store.history(MODEL)[-1].policy == policy(9_999)
    assert store.rollback(MODEL, "test").policy == policy(2_499)
