"""Persistence of traffic policies: atomic files, history, the rollback stack, concurrent writers."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serving.errors import NotFound
from serving.traffic.policy import PolicyError, ShadowPolicy, TrafficPolicy
from serving.traffic.store import HISTORY_FILE, POLICY_FILE, PolicyStore, parse_policy

MODEL = "resnet"
REPO_ROOT = Path(__file__).resolve().parents[2]
A = TrafficPolicy({1: 100})
B = TrafficPolicy({1: 90, 2: 10}, sticky=True)
C = TrafficPolicy({1: 90, 2: 10}, sticky=True, shadow=ShadowPolicy(3, 0.05))
D = TrafficPolicy({2: 100})


class StepClock:
    """A UTC clock that advances one second per reading."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> datetime:
        return datetime(2025, 5, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=next(self._ticks))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / MODEL / "1").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def store(repo: Path) -> PolicyStore:
    return PolicyStore(repo, clock=StepClock())


def history_lines(repo: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (repo / MODEL / HISTORY_FILE).read_text().splitlines()]


# ---- save and load -------------------------------------------------------------------------------


def test_save_load_round_trip_and_readable_file(store: PolicyStore, repo: Path) -> None:
    assert store.load(MODEL) is None
    store.save(MODEL, C, "split", "admin@127.0.0.1:5555")
    assert store.load(MODEL) == C
    text = (repo / MODEL / POLICY_FILE).read_text()
    assert json.loads(text) == {
        "format": 1,
        "weights": {"1": 90, "2": 10},
        "sticky": True,
        "shadow": {"version": 3, "fraction": 0.05},
    }
    assert text.count("\n") > 5 and text.endswith("\n")  # indented, one field per line
    assert stat.S_IMODE((repo / MODEL / POLICY_FILE).stat().st_mode) == 0o644


def test_a_save_leaves_no_temp_files(store: PolicyStore, repo: Path) -> None:
    for policy in (A, B, C, D):
        store.save(MODEL, policy, "split", "test")
    assert sorted(p.name for p in (repo / MODEL).iterdir()) == ["1", HISTORY_FILE, POLICY_FILE]


def test_file_signature_changes_on_every_save(store: PolicyStore) -> None:
    assert store.file_signature(MODEL) is None
    store.save(MODEL, A, "split", "test")
    first = store.file_signature(MODEL)
    store.save(MODEL, A, "split", "test")  # same content, same size: the new inode still tells
    assert first is not None and store.file_signature(MODEL) not in (None, first)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b'{"weights": {"1": 90, "2": -1}}', "weights[2]: must be >= 0, got -1"),
        (b'{"weights": {"1": 90}, "sticky": true, "sticky": false}', "field 'sticky' appears more than once"),
        (b'{"weights": {"1": 90}, "shadows": null}', "unknown field(s) shadows"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b"", "invalid JSON"),
    ],
)
def test_an_invalid_file_raises_naming_the_file_and_keeps_the_last_good_policy(
    store: PolicyStore, repo: Path, content: bytes, message: str
) -> None:
    store.save(MODEL, B, "split", "test")
    last_good = store.load(MODEL)
    (repo / MODEL / POLICY_FILE).write_bytes(content)
    with pytest.raises(PolicyError) as caught:
        store.load(MODEL)
    assert str(caught.value).startswith(f"{repo / MODEL / POLICY_FILE}: ")
    assert message in str(caught.value)
    assert last_good == B and last_good.weights == {1: 90, 2: 10}


def test_a_save_replaces_an_invalid_file_and_records_the_last_good_as_previous(
    store: PolicyStore, repo: Path
) -> None:
    store.save(MODEL, B, "split", "test")
    (repo / MODEL / POLICY_FILE).write_text("{oops")
    entry = store.save(MODEL, D, "promote", "test")
    assert entry.previous == B and store.load(MODEL) == D


def test_model_names_cannot_escape_the_repository(store: PolicyStore) -> None:
    for name in ("", ".", "..", "../etc", "a/b"):
        with pytest.raises(PolicyError, match="not a model folder name"):
            store.load(name)
    with pytest.raises(NotFound, match="no such model folder"):
        store.save("missing", A, "split", "test")
    assert store.load("missing") is None and store.history("missing") == []


# ---- history -------------------------------------------------------------------------------------


def test_every_change_appends_one_history_line(store: PolicyStore, repo: Path) -> None:
    store.save(MODEL, A, "split", "admin@127.0.0.1:5555")
    store.save(MODEL, C, "shadow", "admin@10.0.0.2:4444")
    lines = history_lines(repo)
    assert lines == [
        {
            "time": "2025-05-01T12:00:00.000Z",
            "action": "split",
            "policy": A.to_dict(),
            "previous": None,
            "source": "admin@127.0.0.1:5555",
        },
        {
            "time": "2025-05-01T12:00:01.000Z",
            "action": "shadow",
            "policy": C.to_dict(),
            "previous": A.to_dict(),
            "source": "admin@10.0.0.2:4444",
        },
    ]
    entries = store.history(MODEL)
    assert [(e.action, e.policy, e.previous) for e in entries] == [("split", A, None), ("shadow", C, A)]
    assert entries[0].time == datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert [e.action for e in store.history(MODEL, limit=1)] == ["shadow"]
    assert store.history(MODEL, limit=0) == []


def test_rollback_is_not_a_saveable_action(store: PolicyStore) -> None:
    for action in ("rollback", ""):
        with pytest.raises(PolicyError, match="cannot be saved"):
            store.save(MODEL, A, action, "test")


def test_a_torn_history_line_is_skipped_and_does_not_swallow_the_next(store: PolicyStore, repo: Path) -> None:
    store.save(MODEL, A, "split", "test")
    with open(repo / MODEL / HISTORY_FILE, "a") as history:
        history.write('{"time": "2025-05-01T12:')  # a crash mid-append: no newline
    store.save(MODEL, B, "split", "test")
    assert [(e.policy, e.previous) for e in store.history(MODEL)] == [(A, None), (B, A)]


# ---- rollback ------------------------------------------------------------------------------------


def test_successive_rollbacks_walk_back_through_history(store: PolicyStore, repo: Path) -> None:
    for policy in (A, B, C):
        store.save(MODEL, policy, "split", "admin")
    restored = [store.rollback(MODEL, "ops") for _ in range(3)]
    assert [(e.policy, e.previous) for e in restored] == [(B, C), (A, B), (None, A)]
    assert store.load(MODEL) is None and not (repo / MODEL / POLICY_FILE).exists()
    with pytest.raises(PolicyError, match="nothing to roll back to") as caught:
        store.rollback(MODEL, "ops")
    assert str(repo / MODEL / HISTORY_FILE) in str(caught.value)
    assert [e.action for e in store.history(MODEL)] == ["split"] * 3 + ["rollback"] * 3


def test_a_change_after_a_rollback_is_rolled_back_first(store: PolicyStore) -> None:
    for policy in (A, B, C):
        store.save(MODEL, policy, "split", "admin")
    store.rollback(MODEL, "ops")  # → B
    store.save(MODEL, D, "promote", "admin")  # stack: A, B, D
    assert store.rollback(MODEL, "ops").policy == B
    assert store.rollback(MODEL, "ops").policy == A
    assert store.load(MODEL) == A


def test_a_rollback_with_nothing_saved_is_an_error(store: PolicyStore) -> None:
    with pytest.raises(PolicyError, match="nothing to roll back to"):
        store.rollback(MODEL, "ops")


def test_clear_removes_the_policy_and_a_rollback_restores_it(store: PolicyStore) -> None:
    store.save(MODEL, B, "split", "admin")
    entry = store.clear(MODEL, "admin")
    assert (entry.action, entry.policy, entry.previous) == ("clear", None, B)
    assert store.load(MODEL) is None and store.file_signature(MODEL) is None
    assert store.rollback(MODEL, "ops").policy == B and store.load(MODEL) == B


def test_a_hand_edit_is_recorded_and_a_rollback_undoes_it(store: PolicyStore, repo: Path) -> None:
    store.save(MODEL, A, "split", "admin")
    (repo / MODEL / POLICY_FILE).write_text(json.dumps(B.to_dict()))
    edit = store.reconcile(MODEL)
    assert edit is not None and (edit.action, edit.policy, edit.previous, edit.source) == (
        "edit",
        B,
        A,
        "file",
    )
    assert store.reconcile(MODEL) is None  # recorded once
    (repo / MODEL / POLICY_FILE).write_text(json.dumps(C.to_dict()))  # an edit nobody reconciled
    assert store.rollback(MODEL, "ops").policy == B
    assert store.rollback(MODEL, "ops").policy == A
    assert [e.action for e in store.history(MODEL)] == ["split", "edit", "edit", "rollback", "rollback"]


# ---- crash safety and concurrency ----------------------------------------------------------------


def test_a_stray_temp_file_is_ignored_and_a_stale_one_removed(store: PolicyStore, repo: Path) -> None:
    store.save(MODEL, A, "split", "test")
    stray = repo / MODEL / ".traffic.json.crashed.tmp"
    stray.write_text('{"weights": {"9": 1')  # what a writer that died mid-write leaves
    assert store.load(MODEL) == A
    fresh = repo / MODEL / ".traffic.json.inflight.tmp"
    fresh.write_text("{")
    os.utime(stray, (0, 0))
    store.save(MODEL, B, "split", "test")
    assert not stray.exists()  # old: a crashed writer's
    assert fresh.exists()  # recent: it may be another host's write in progress
    assert store.load(MODEL) == B


def test_concurrent_loads_always_see_a_whole_policy(store: PolicyStore) -> None:
    policies = [A, B, C, D]
    store.save(MODEL, A, "split", "test")
    stop = threading.Event()
    seen: list[TrafficPolicy | None] = []
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(store.load(MODEL))
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            store.save(MODEL, policies[i % 4], "split", "writer")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert len(seen) > 200 and set(seen) <= set(policies)


def test_writers_in_other_processes_are_serialised(repo: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from serving.traffic.store import PolicyStore\n"
        "from serving.traffic.policy import TrafficPolicy\n"
        "store = PolicyStore(Path(sys.argv[1]))\n"
        "for i in range(40):\n"
        "    store.save('resnet', TrafficPolicy({1: 100 - i, 2: i}), 'split', sys.argv[2])\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(repo), f"writer-{n}"], cwd=REPO_ROOT)
        for n in range(2)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    entries = PolicyStore(repo).history(MODEL)
    assert len(entries) == 80
    # Each change saw the one before it: no write was lost between reading and writing.
    assert entries[0].previous is None
    assert all(later.previous == earlier.policy for earlier, later in itertools.pairwise(entries))
    assert PolicyStore(repo).load(MODEL) == entries[-1].policy


def test_parse_policy_names_the_path() -> None:
    with pytest.raises(PolicyError, match=r"^/somewhere/traffic.json: weights: missing$"):
        parse_policy(Path("/somewhere/traffic.json"), b"{}")
