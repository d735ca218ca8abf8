"""The teacher store's garbage collection and its leases (potstill/store.py): gc never removes a
key a live run under the same store may still read, whatever the segments' age."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from potstill import store

ROOT = Path(__file__).resolve().parents[2]


def old_segment(output_root: Path, keys: list[str], age_s: float = 7200.0) -> str:
    """A segment written `age_s` ago (older than any grace period)."""
    path = store.write_segment(store.model_dir(str(output_root), "ab" * 32), keys,
                               [[0.0, -1.0]] * len(keys), [3] * len(keys))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def write_lease(output_root: Path, name: str, **info) -> Path:
    folder = Path(store.leases_dir(str(output_root)))
    folder.mkdir(parents=True, exist_ok=True)
    base = {"kind": "run", "dataset": "other", "host": "another-host", "pid": 1,
            "started_at": time.time(), "heartbeat_at": time.time()}
    (folder / name).write_text(json.dumps({**base, **info}))
    return folder / name


def test_a_live_run_lease_stops_gc_from_removing_anything(tmp_path):
    """The run of another dataset started two hours ago: its answers are past the grace period
    and in no published version yet. While it holds its lease, gc removes none of them."""
    seg = old_segment(tmp_path, ["in-flight-1", "in-flight-2"])
    with store.run_lease(str(tmp_path), "other") as lease:
        dry = store.collect(str(tmp_path), dry_run=True, grace_s=0)
        real = store.collect(str(tmp_path), grace_s=0)
        assert Path(lease).is_file()
    for report in (dry, real):
        assert report["skipped"] and "live lease" in report["skipped"]
        assert [l["path"] for l in report["live_leases"]] == [lease]
        assert report["live_leases"][0]["dataset"] == "other"
        assert report["removed"] == report["entries_removed"] == 0
    assert Path(seg).is_file()
    assert not Path(lease).exists()  # released with the run
    # the run ended without publishing: now its answers are what no version needs
    after = store.collect(str(tmp_path), grace_s=0)
    assert after["skipped"] is None and after["removed"] == 1 and not Path(seg).exists()


def test_the_lease_of_a_killed_run_is_stale_and_removed(tmp_path):
    """A run killed with SIGKILL leaves its lease file; its pid is gone, so gc removes the lease
    (and says so) and collects."""
    seg = old_segment(tmp_path, ["orphan"])
    code = ("import sys, time; from potstill import store\n"
            "cm = store.run_lease(sys.argv[1], 'other'); print(cm.__enter__(), flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE)
    try:
        lease = proc.stdout.readline().strip()
        assert Path(lease).is_file()
        live = store.collect(str(tmp_path), grace_s=0)
        assert live["skipped"] and live["live_leases"][0]["pid"] == proc.pid
        assert Path(seg).is_file()
    finally:
        proc.kill()
        proc.wait()
    dry = store.collect(str(tmp_path), dry_run=True, grace_s=0)
    real = store.collect(str(tmp_path), grace_s=0)
    for report in (dry, real):
        assert [l["path"] for l in report["stale_leases"]] == [lease]
        assert "not running" in report["stale_leases"][0]["stale"]
        assert report["skipped"] is None and report["removed"] == 1
    assert not Path(lease).exists() and not Path(seg).exists()


def test_a_lease_from_another_host_is_live_until_its_heartbeat_is_old(tmp_path):
    """gc cannot see a process on another host: the heartbeat's age decides."""
    seg = old_segment(tmp_path, ["remote-run-key"])
    fresh = write_lease(tmp_path, "fresh.json")
    report = store.collect(str(tmp_path), grace_s=0)
    assert report["skipped"] and report["live_leases"][0]["host"] == "another-host"
    assert Path(seg).is_file() and fresh.is_file()
    fresh.unlink()
    old = write_lease(tmp_path, "old.json", heartbeat_at=time.time() - 2 * store.STALE_AFTER_S)
    report = store.collect(str(tmp_path), grace_s=0)
    assert "no heartbeat" in report["stale_leases"][0]["stale"] and report["removed"] == 1
    assert not old.exists() and not Path(seg).exists()


def test_an_unreadable_lease_counts_as_live_until_it_is_old(tmp_path):
    seg = old_segment(tmp_path, ["k"])
    bad = write_lease(tmp_path, "bad.json")
    bad.write_text("{not json")
    report = store.collect(str(tmp_path), grace_s=0)
    assert report["skipped"] and "unreadable lease file" in report["live_leases"][0]["problem"]
    assert report["live_leases"][0]["path"] == str(bad) and Path(seg).is_file()
    then = time.time() - 2 * store.STALE_AFTER_S
    os.utime(bad, (then, then))
    assert store.collect(str(tmp_path), grace_s=0)["removed"] == 1 and not bad.exists()


def test_a_lease_on_this_host_with_a_running_pid_is_live(tmp_path):
    lease = store.Lease("x", "run", "d", socket.gethostname(), os.getpid(), 0.0, time.time())
    assert lease.stale_because() is None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    gone = store.Lease("x", "run", "d", socket.gethostname(), int(dead), 0.0, time.time())
    assert "not running" in gone.stale_because()


def test_the_heartbeat_refreshes_the_lease(tmp_path):
    with store.hold_lease(str(tmp_path), "run", "d", heartbeat_s=0.05) as path:
        first = json.loads(Path(path).read_text())["heartbeat_at"]
        deadline = time.time() + 10
        while json.loads(Path(path).read_text())["heartbeat_at"] == first and time.time() < deadline:
            time.sleep(0.02)
        assert json.loads(Path(path).read_text())["heartbeat_at"] > first
    assert not Path(path).exists()
    assert not list(Path(store.leases_dir(str(tmp_path))).iterdir())  # no temporary files left


def test_a_run_waits_for_a_gc_in_progress(tmp_path):
    """A run that starts while gc collects waits until gc is done: no segment it lists can go
    while it reads it."""
    gc_done = threading.Event()

    def gc():
        with store.hold_lease(str(tmp_path), "gc"):
            time.sleep(0.5)
        gc_done.set()

    thread = threading.Thread(target=gc)
    thread.start()
    while not Path(store.leases_dir(str(tmp_path))).is_dir() or not store.live_leases(str(tmp_path)):
        time.sleep(0.01)
    with store.run_lease(str(tmp_path), "d", poll_s=0.02):
        assert gc_done.is_set()
    thread.join()


def test_gc_skips_while_another_gc_collects(tmp_path):
    seg = old_segment(tmp_path, ["k"])
    with store.hold_lease(str(tmp_path), "gc"):
        report = store.collect(str(tmp_path), grace_s=0)
    assert report["skipped"] and report["live_leases"][0]["kind"] == "gc" and Path(seg).is_file()


def test_needed_keys_are_read_after_the_leases_are_checked(tmp_path, monkeypatch):
    """A version published by a run just before gc looks (its lease gone) still protects its
    keys: collect reads the needed keys itself, after the lease check, not before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    seg = old_segment(tmp_path, ["published-key"])
    real_read = store.read_leases

    def publish_then_read(output_root):
        version = tmp_path / "ds" / "v1"
        version.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"key": ["published-key"]}, schema=store.KEYS_SCHEMA),
                       version / store.KEYS_FILE)
        return real_read(output_root)
    monkeypatch.setattr(store, "read_leases", publish_then_read)
    report = store.collect(str(tmp_path), grace_s=0)
    assert report["kept"] == 1 and report["removed"] == 0 and Path(seg).is_file()


def test_temporary_files_of_dead_writers_are_collected_and_counted_alike_in_a_dry_run(tmp_path):
    folder = Path(store.model_dir(str(tmp_path), "cd" * 32))
    folder.mkdir(parents=True)
    tmp = folder / ".tmp-dead.parquet"
    tmp.write_bytes(b"half")
    then = time.time() - 7200
    os.utime(tmp, (then, then))
    dry = store.collect(str(tmp_path), dry_run=True)
    assert dry["temporary_removed"] == 1 and tmp.exists()
    assert store.collect(str(tmp_path))["temporary_removed"] == 1 and not tmp.exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_collect_on_an_empty_root(tmp_path, dry_run):
    report = store.collect(str(tmp_path / "nothing-here"), dry_run=dry_run)
    assert report["segments"] == 0 and report["skipped"] is None
