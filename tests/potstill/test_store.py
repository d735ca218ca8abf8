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


def test_a_run_sums_the_cost_its_segments_recorded_and_older_segments_read_as_before(tmp_path):
    """What the teacher stage spent is kept in its segments' metadata under its run id: the run
    sums its own records only (not another run's, not the audit's segments without a record),
    a batch whose every row failed keeps its record in a segment with no answers, and a
    segment as older versions wrote it (no record, a plain name) is read as before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = store.TeacherStore.open(str(tmp_path), "ab" * 32)
    Path(s.folder).mkdir(parents=True)
    older = Path(s.folder) / "0123456789abcdef0123456789abcdef.parquet"
    pq.write_table(pa.table({"key": ["old"], "answer": [[0.0, -1.0]], "prompt_tokens": [3],
                             "created_at": [1.0]}, schema=store.SCHEMA), older)
    cost = store.WriteUsage("run1", rows=2, calls=3, retries=1, prompt_tokens=17, seconds=0.5,
                            remote={"requests": 4, "retries_429": 1})
    seg = s.write(["a", "b"], [[0.0, -1.0], [-2.0, 0.0]], [8, 9], cost)
    failed = s.write([], [], [], store.WriteUsage("run1", rows=1, rows_failed=1, calls=2, retries=1,
                                                  prompt_tokens=5))
    s.write(["c"], [[0.0, -3.0]], [4], store.WriteUsage("run2", rows=1, calls=1, prompt_tokens=4))
    s.write(["audit"], [[0.0, -4.0]], [6])  # the audit's: no record

    assert Path(seg).name.startswith("run1-") and pq.read_metadata(failed).num_rows == 0
    records, keys = s.run_usage("run1")
    assert sorted(records, key=lambda r: r.rows, reverse=True) == [
        cost, store.WriteUsage("run1", rows=1, rows_failed=1, calls=2, retries=1, prompt_tokens=5)]
    assert sorted(keys.to_pylist()) == ["a", "b"]
    none, no_keys = s.run_usage("run3")
    assert none == [] and len(no_keys) == 0
    assert s.keys() == {"old", "a", "b", "c", "audit"}
    assert s.index().lookup({"old", "b"}) == {"old": [0.0, -1.0], "b": [-2.0, 0.0]}
    assert store.read_segment(seg) and list(store.read_segment(failed)) == []
    # gc: the empty segment goes once no version needs anything in it, the rest likewise
    for path in store.segments(s.folder):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    report = store.collect(str(tmp_path), grace_s=3600)
    assert report["segments"] == 5 and report["removed"] == 5 and not Path(failed).exists()


def test_a_usage_record_that_cannot_be_read_is_no_record():
    assert store.WriteUsage.from_metadata(None) is None
    assert store.WriteUsage.from_metadata({store.USAGE_META: b"{not json"}) is None
    assert store.WriteUsage.from_metadata({store.USAGE_META: b'{"rows": 3}'}) is None  # no run
    newer = b'{"run": "r", "rows": 3, "calls": 3, "a_later_field": 1}'
    assert store.WriteUsage.from_metadata({store.USAGE_META: newer}) == store.WriteUsage("r", rows=3, calls=3)
    with pytest.raises(ValueError, match="letters and digits"):
        store.write_segment("unused", [], [], [], store.WriteUsage("../x"))


def test_answers_in_memory_return_each_stored_answer_and_none_for_the_rest(tmp_path):
    """`store.Answers` (the graph's lookup of a store up to teacher.store_lookup_answers): every key finds the
    answer its segment holds, whatever the segment (with or without a usage record, empty),
    answers of any length (none included), request keys and others alike; unknown keys and
    differently-cased digests find nothing."""
    import hashlib
    import random

    rng = random.Random(3)
    folder = store.model_dir(str(tmp_path), "cd" * 32)
    want: dict[str, list[float]] = {}
    for seg in range(40):
        keys = [hashlib.sha256(f"{seg}-{i}".encode()).hexdigest() for i in range(rng.randint(0, 9))]
        answers = [[rng.uniform(-9, 0) for _ in range(rng.randint(0, 6))] for _ in keys]
        usage = store.WriteUsage("run1", rows=len(keys)) if seg % 2 else None
        store.write_segment(folder, keys + ["audit-key"], answers + [[0.5]], [3] * (len(keys) + 1), usage)
        want.update(zip(keys, answers))
    want["audit-key"] = [0.5]
    table = store.Answers(store.segments(folder), threads=3)
    assert len(table) == len(want)
    missing = [hashlib.sha256(b"never").hexdigest(), "z" * 64, "",
               next(iter(want)).upper()]
    asked = list(want) + missing
    rng.shuffle(asked)
    got = dict(zip(asked, table.get_many(asked)))
    assert {k: got[k] for k in want} == want
    assert all(got[k] is None for k in missing)
    assert store.Answers([]).get_many(list(want)[:3]) == [None] * 3


def test_answers_in_memory_name_a_segment_that_cannot_be_read(tmp_path):
    folder = store.model_dir(str(tmp_path), "cd" * 32)
    store.write_segment(folder, ["a" * 64], [[0.0]], [1])
    bad = Path(folder) / "broken.parquet"
    bad.write_bytes(b"PAR1 not a segment")
    with pytest.raises(store.StoreError, match="broken.parquet"):
        store.Answers(store.segments(folder))


def test_counting_answers_reads_footers_only_and_names_a_segment_that_cannot_be_read(tmp_path):
    folder = store.model_dir(str(tmp_path), "cd" * 32)
    for i in range(30):
        store.write_segment(folder, [f"k{i}-{j}" for j in range(i % 4)], [[0.0]] * (i % 4), [1] * (i % 4))
    paths = store.segments(folder)
    assert store.answer_count(paths) == sum(i % 4 for i in range(30))
    assert store.answer_count(paths, more_than=5) > 5
    Path(paths[7]).write_bytes(b"PAR1 cut short")
    with pytest.raises(store.StoreError, match=Path(paths[7]).name):
        store.answer_count(paths)


def test_a_store_says_which_of_the_keys_asked_it_answers(tmp_path):
    import hashlib

    s = store.TeacherStore.open(str(tmp_path), "ef" * 32)
    keys = [hashlib.sha256(bytes([i])).hexdigest() for i in range(6)]
    s.write(keys[:2], [[0.0, -1.0]] * 2, [3, 3])
    s.write(keys[2:3] + ["audit"], [[-1.0]] * 2, [3, 3], store.WriteUsage("run1", rows=2))
    assert s.answered(keys + ["audit", "other"]) == set(keys[:3]) | {"audit"}
    assert s.answered([]) == set() and store.TeacherStore("x").answered(keys) == set()


def test_a_segment_with_other_column_types_is_read_as_the_stores_or_named(tmp_path):
    """Lookups read (key, answer) as the store's types: float32 answers (or another writer's
    list type) come back as float64; columns that cannot be are a StoreError naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(store.model_dir(str(tmp_path), "cd" * 32))
    folder.mkdir(parents=True)
    key = "b" * 64
    pq.write_table(pa.table({"key": [key], "answer": pa.array([[0.5, -1.0]], pa.large_list(pa.float32()))}),
                   folder / "other-writer.parquet")
    store.write_segment(str(folder), ["c" * 64], [[0.0]], [1])
    assert store.Answers(store.segments(str(folder))).get_many([key, "c" * 64]) == [[0.5, -1.0], [0.0]]
    pq.write_table(pa.table({"key": ["d" * 64], "answer": ["not numbers"]}), folder / "foreign.parquet")
    with pytest.raises(store.StoreError, match="foreign.parquet holds .*string.* not this store's"):
        store.Answers(store.segments(str(folder)))
