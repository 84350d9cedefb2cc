"""Lease locks (:func:`prunebench.store.locked`): no ``flock``, safe on shared filesystems,
and a lost holder never keeps a lock forever. Plus where the index lives."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import time
from pathlib import Path

from prunebench.store import RunStore, _node, index_location, lease_path, locked

CTX = mp.get_context("spawn")


def _increment(lock: str, counter: str, n: int) -> None:
    for _ in range(n):
        with locked(Path(lock)):
            value = int(Path(counter).read_text())
            time.sleep(0.002)  # widen the race a lock must close
            Path(counter).write_text(str(value + 1))


def _hold(lock: str, flag: str, seconds: float) -> None:
    os.environ["PRUNEBENCH_LEASE_TIMEOUT"] = "1"
    with locked(Path(lock)):
        Path(flag).write_text("held")
        time.sleep(seconds)


def _wait_for(p: Path, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while not p.exists():
        assert time.monotonic() - t0 < timeout, f"{p} never appeared"
        time.sleep(0.02)


def _write_lease(lock: Path, **fields) -> None:
    owner = {"host": socket.gethostname(), "node": _node(), "pid": 999_999_999, "token": "old",
             "acquired": time.time(), "heartbeat": time.time(), **fields}
    lease = lease_path(lock)
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text(json.dumps(owner))


def test_mutual_exclusion_across_processes(tmp_path):
    lock, counter = tmp_path / "stage" / ".lock", tmp_path / "counter"
    counter.write_text("0")
    procs = [CTX.Process(target=_increment, args=(str(lock), str(counter), 25)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert int(counter.read_text()) == 50
    assert not lease_path(lock).exists()  # released: no lease left behind


def test_reentrant_and_released(tmp_path):
    lock = tmp_path / ".lock"
    with locked(lock):
        owner = json.loads(lease_path(lock).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with locked(lock):  # the same thread may nest it
            assert lease_path(lock).exists()
        assert lease_path(lock).exists()
    assert not lease_path(lock).exists()
    assert not list(tmp_path.iterdir())  # no temporary files either


def test_stale_lease_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_LEASE_TIMEOUT", "60")
    old = tmp_path / "a" / ".lock"
    _write_lease(old, heartbeat=time.time() - 3600, node="elsewhere")  # old heartbeat
    dead = tmp_path / "b" / ".lock"
    _write_lease(dead)  # a dead pid on this host, fresh heartbeat
    for lock in (old, dead):
        t0 = time.monotonic()
        with locked(lock):
            owner = json.loads(lease_path(lock).read_text())
            assert owner["token"] != "old" and owner["pid"] == os.getpid()
        assert time.monotonic() - t0 < 10
        assert not lease_path(lock).exists()


def test_release_never_removes_another_owners_lease(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_LEASE_TIMEOUT", "60")
    lock = tmp_path / ".lock"
    with locked(lock):
        _write_lease(lock, pid=1, token="theirs")  # somebody took it over meanwhile
    assert json.loads(lease_path(lock).read_text())["token"] == "theirs"


def test_live_holder_is_not_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_LEASE_TIMEOUT", "1")
    lock, flag = tmp_path / ".lock", tmp_path / "held"
    p = CTX.Process(target=_hold, args=(str(lock), str(flag), 4.0))
    p.start()
    try:
        _wait_for(flag)
        t0 = time.monotonic()
        with locked(lock):  # heartbeats keep it alive well past the 1 s timeout
            waited = time.monotonic() - t0
        p.join(30)
        assert p.exitcode == 0
        assert waited > 2.0  # waited for the holder to finish, never took it over
    finally:
        p.kill()


def test_killed_holder_is_taken_over_after_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_LEASE_TIMEOUT", "1")
    lock, flag = tmp_path / ".lock", tmp_path / "held"
    p = CTX.Process(target=_hold, args=(str(lock), str(flag), 600.0))
    p.start()
    _wait_for(flag)
    os.kill(p.pid, signal.SIGKILL)  # not reaped: a zombie, its pid still "exists"
    t0 = time.monotonic()
    with locked(lock):
        assert json.loads(lease_path(lock).read_text())["pid"] == os.getpid()
    assert time.monotonic() - t0 < 15
    p.join(10)
    assert not lease_path(lock).exists()


def test_index_location(tmp_path, monkeypatch):
    import prunebench.store as st

    store = tmp_path / "runs"
    monkeypatch.delenv("PRUNEBENCH_INDEX", raising=False)
    assert index_location(store) == store / "index.sqlite"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(st, "filesystem_type", lambda p: "nfs4")  # a store on NFS
    local = index_location(store)
    assert local.parent == tmp_path / "cache" / "prunebench" / "index"
    assert local != index_location(tmp_path / "other" / "runs")  # keyed by the store path
    monkeypatch.setenv("PRUNEBENCH_INDEX", "store")
    assert index_location(store) == store / "index.sqlite"
    monkeypatch.setenv("PRUNEBENCH_INDEX", str(tmp_path / "idx"))
    assert index_location(store).parent == tmp_path / "idx"
    monkeypatch.setenv("PRUNEBENCH_INDEX", "local")
    monkeypatch.setattr(st, "filesystem_type", lambda p: "ext4")
    assert index_location(store) == local
    rs = RunStore(store)
    assert rs.list_runs() == [] and not (store / "index.sqlite").exists()


def test_filesystem_type_of_a_local_folder(tmp_path):
    from prunebench.store import NETWORK_FS, filesystem_type

    kind = filesystem_type(tmp_path / "not" / "yet")
    assert kind is None or isinstance(kind, str)
    if os.environ.get("PRUNEBENCH_TEST_ON_NFS") is None:
        assert kind not in NETWORK_FS


def test_a_worker_store_never_opens_the_index(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    rid = "0123456789ab"
    (out / rid).mkdir(parents=True)
    (out / rid / "recipe.yaml").write_text("name: x\n")
    monkeypatch.setenv("PRUNEBENCH_INDEX_WRITES", "0")  # as in a study worker
    rs = RunStore(out)
    assert not rs.index_writes
    rs.record(rid, "running", {"name": "x"})
    assert [r["id"] for r in rs.list_runs()] == [rid]
    assert not (out / "index.sqlite").exists()
    monkeypatch.delenv("PRUNEBENCH_INDEX_WRITES")
    driver = RunStore(out)
    driver.record_folders([rid])
    assert (out / "index.sqlite").exists()
    assert [r["id"] for r in driver.list_runs()] == [rid]


def test_a_dead_pid_on_another_node_waits_for_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_LEASE_TIMEOUT", "1")
    lock = tmp_path / ".lock"
    # same host name, another machine or container: its pid means nothing here
    _write_lease(lock, node="other-boot")
    t0 = time.monotonic()
    with locked(lock):
        pass
    assert time.monotonic() - t0 >= 0.9  # taken over only once the heartbeat went stale


def test_a_finished_runs_leftover_lease_is_cleared_on_the_next_start(tmp_path, monkeypatch):
    """A kill between a run's result and the release of its lock left a lease nobody takes
    again (finished runs are skipped, not locked): the next start clears it when its owner
    is gone, and leaves a live owner's alone."""
    import prunebench
    from prunebench.store import clear_stale_lock

    monkeypatch.setenv("PRUNEBENCH_LEASE_TIMEOUT", "60")
    tiny = Path(__file__).parent / "fixtures" / "tiny.yaml"
    out = tmp_path / "runs"
    res = prunebench.run(tiny, out=out)
    lock = out / res.id / ".lock"
    _write_lease(lock)  # a dead pid on this node
    again = prunebench.run(tiny, out=out)
    assert again.status == "done" and not lease_path(lock).exists()
    _write_lease(lock, pid=os.getpid(), token="mine")  # a live owner, fresh heartbeat
    assert not clear_stale_lock(lock) and lease_path(lock).exists()
    _write_lease(lock, pid=os.getpid(), heartbeat=time.time() - 3600, token="old")
    assert clear_stale_lock(lock) and not lease_path(lock).exists()
