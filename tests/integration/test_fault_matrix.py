"""The fault matrix: every stage of a job (read, teacher, store write, curation, gate, publish,
gc) meets a kill, a missing permission and a full disk. Each cell ends in a clean error naming
the cause (exit 2, the folder or file in the message, no traceback), and then in a rerun that
publishes exactly what an uninterrupted run publishes, paying the teacher only for answers the
store does not hold; never in a smaller dataset.

How the faults are made (tests/fault_injection.py; a job runs the tiny random teacher,
potstill.models.tiny, on the toy job of tests/beam_pipelines/test_teacher_store.py):

- A fork server. Starting Python with torch, Beam and great-expectations costs ~10 s a job,
  too much for ~40 runs on two shared cores, so one server process imports everything, runs
  the uninterrupted baseline (which also warms every lazy import), then forks one child per
  run (~3 s each). The child installs the cell's fault at the stage's entry point (a wrapper
  around the function the stage calls; for Beam stages armed only once the driver starts the
  graph, so the audit's own teacher calls do not count) and runs `potstill` through its CLI
  entry point (`cli.main`), stdout and stderr into files. The rerun is another child, without
  a fault, once the test has put the permission back or freed the disk.
- Kill: the child sends itself SIGKILL at the stage (no handler, no cleanup runs).
- Missing permission: chmod of what the stage reads or writes, after the run has started (so
  the stage's own error handling is what is tested, not the checks at start). CI runs as root,
  whom permission bits do not stop: the child, still uid 0, drops CAP_DAC_OVERRIDE and
  CAP_DAC_READ_SEARCH from its capability sets (capset(2)), so the bits apply to it as to any
  user (not root: the bits apply as they are). Where capset is refused, or the bits still do
  not stop the child, the permission cells are skipped, saying why.
- Full disk: a real ENOSPC. The child enters a new user and mount namespace (unshare(2) with
  CLONE_NEWUSER | CLONE_NEWNS: tmpfs is mountable there without any privilege on the host; a
  plain mount namespace is the fallback for root), mounts a small tmpfs over output_root
  (copying what was there in), and at the stage fills it to the last byte. When the child
  ends, what the job left on the tmpfs (the filler removed: the disk freed) is copied back to
  the real output_root for the rerun. A loop-mounted filesystem needs CAP_SYS_ADMIN on the host
  and a free loop device; RLIMIT_FSIZE gives EFBIG, not ENOSPC, and stops the log file as well.
  Where no namespace can be made, the disk cells are skipped, saying why.

A cell that ends in exit 0 instead (the stage got past its fault) must have published exactly
the uninterrupted run's data; gc's cells check that no answer a version needs is ever lost.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fault_injection import ForkServer, Point

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "_teacher_store_helpers", ROOT / "tests" / "beam_pipelines" / "test_teacher_store.py")
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
write_config, manifest = _helpers.write_config, _helpers.manifest  # the same toy job

ROWS = 12                       # 6 canonical batches of 2 (+ the audit's 2 seed rows)
VERSION_FILES = ("data/part-0.parquet", "filtered.parquet", "rejected.parquet", "teacher_keys.parquet")
STORE_PART = "/.potstill-store/teacher/"
RUN_ROUNDS = "potstill.beam_pipelines.pipeline:run_rounds"   # the driver starts the Beam graph
COLLECT = "potstill.store:_collect"                          # gc, under its lease


# -- where each fault fires ---------------------------------------------------------------

def _store_path(args) -> bool:
    return STORE_PART in str(args[1])


def _model_folder(args) -> tuple[str, int]:
    teacher = Path(args[0]) / ".potstill-store" / "teacher"
    (folder,) = [p for p in teacher.iterdir() if p.is_dir()]
    return str(folder), 0o555


READ = "potstill.transforms.read:ParseFile.process"
SCORE = "potstill.models.teacher.hf:HFTeacher.score_encoded"
WRITE_SEGMENT = "potstill.store:write_segment"
MV = "fsspec.implementations.local:LocalFileSystem.mv"
RM = "fsspec.implementations.local:LocalFileSystem.rm"
PREPARE = "potstill.job:prepare_version"
GATE = "potstill.publish.expectations:validate_file"
PUBLISH = "potstill.publish.versions:publish"

POINTS: dict[tuple[str, str], Point] = {
    # read: Beam reads the corpus files (the plan hashed them already)
    ("read", "kill"): Point(READ, RUN_ROUNDS),
    ("read", "permission"): Point(READ, RUN_ROUNDS,  # the file being read
                                  target=lambda a: (a[1].metadata.path, 0o000)),
    ("read", "full disk"): Point(READ, RUN_ROUNDS),
    # teacher: the model answers the pool's batches; it reads the store's segments to skip
    # what is answered (the audit stored the seed rows')
    ("teacher", "kill"): Point(SCORE, RUN_ROUNDS, nth=3),
    ("teacher", "permission"): Point("potstill.store:read_answers", RUN_ROUNDS,
                                     target=lambda a: (a[0], 0o000)),
    ("teacher", "full disk"): Point(SCORE, RUN_ROUNDS),
    # store write: a batch's answers become a segment (temporary file, then rename)
    ("store write", "kill"): Point(MV, RUN_ROUNDS, nth=3, when=_store_path),  # tmp written, not renamed
    ("store write", "permission"): Point(WRITE_SEGMENT, RUN_ROUNDS, nth=3,
                                         target=lambda a: (a[0], 0o555)),
    ("store write", "full disk"): Point(WRITE_SEGMENT, RUN_ROUNDS, nth=3),
    # curation: DuckDB over the staged shards, into the version's files (in the staging folder)
    ("curation", "kill"): Point(PREPARE),
    ("curation", "permission"): Point(PREPARE, target=lambda a: (str(a[1]), 0o555)),
    ("curation", "full disk"): Point(PREPARE),
    # gate: great-expectations reads the prepared data file
    ("gate", "kill"): Point(GATE),
    ("gate", "permission"): Point(GATE, target=lambda a: (str(a[0]), 0o000)),
    ("gate", "full disk"): Point(GATE),
    # publish: a hidden folder in the dataset folder, manifest, card, report, rename
    ("publish", "kill"): Point("potstill.publish.card:write_card"),  # files moved, not renamed
    ("publish", "permission"): Point(PUBLISH, target=lambda a: (str(Path(a[0]) / a[1]), 0o555)),
    ("publish", "full disk"): Point(PUBLISH),
    # gc: rewrites the segments holding needed and unneeded keys, removes the rest
    ("gc", "kill"): Point(RM, COLLECT, when=lambda a: STORE_PART in str(a[1])),
    ("gc", "permission"): Point(COLLECT, target=_model_folder),
    ("gc", "full disk"): Point(COLLECT),
}
JOB_STAGES = ("read", "teacher", "store write", "curation", "gate", "publish")
FAULTS = ("kill", "permission", "full disk")


# -- the tests' side ---------------------------------------------------------------------------

@dataclass
class Matrix:
    server: ForkServer
    baseline: Path          # the uninterrupted run's version
    mechanisms: dict


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, tiny_lm):
    folder = tmp_path_factory.mktemp("fault-matrix")
    server = ForkServer(folder, "test_fault_matrix", Path(__file__).resolve().parent)
    try:
        base = folder / "baseline"
        write_config(base, tiny_lm, rows=ROWS)
        rc, err = server.run(base, ["run", "config.yaml"], in_process=True)
        assert rc == 0, err[-3000:]
        baseline = Path((base / "stdout").read_text().strip().splitlines()[-1])
        yield Matrix(server, baseline, server.probe())
    finally:
        server.close()


def _skip_unless_possible(matrix: Matrix, fault: str) -> None:
    if fault == "permission" and not matrix.mechanisms["permission"]:
        pytest.skip("permission bits do not stop this process (root, and capset(2) could not drop "
                    "CAP_DAC_OVERRIDE)")
    if fault == "full disk" and not matrix.mechanisms["full disk"]:
        pytest.skip("no tmpfs can be mounted here (unshare(2) of a user or mount namespace refused)")


def _fired(case: Path, stage: str, fault: str) -> dict:
    record = case / "fault.json"
    assert record.exists(), f"the {fault} never reached the {stage} stage"
    info = json.loads(record.read_text())
    record.unlink()
    return info


def _after_fault(case: Path, info: dict) -> None:
    """Undo the fault: the permission back (the disk was freed as the child ended)."""
    if "mode" in info and os.path.lexists(info["path"]):  # a run's own folders go with it
        os.chmod(info["path"], info["mode"])
    real = case / ".real-out"
    if real.exists():
        real.rmdir()


def _outcome(rc: int, err: str, fault: str, info: dict, out_root: Path) -> str:
    """"killed"; "error": exit 2 with one message naming what failed, no traceback; or "done":
    exit 0 (the caller checks the result is whole)."""
    if fault == "kill":
        assert rc == -signal.SIGKILL, err[-3000:]
        return "killed"
    if rc == 0:
        return "done"
    assert rc == 2, f"exit {rc}, expected 2 or 0:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    message = [line for line in err.splitlines() if line.startswith("potstill: error:")]
    assert len(message) == 1, err[-3000:]
    if fault == "permission":
        assert info["path"] in message[0], message[0]
    else:
        assert str(out_root) in message[0] and "No space left on device" in message[0], message[0]
    return "error"


def _store_entries(out_root: Path) -> list[str]:
    from potstill import store

    return [k for seg in store.segments(store.root(str(out_root))) for k, _ in store.read_segment(seg)]


def _assert_same_as_baseline(version: Path, baseline: Path) -> None:
    for rel in VERSION_FILES:
        assert (version / rel).read_bytes() == (baseline / rel).read_bytes(), rel
    assert manifest(version)["counts"] == manifest(baseline)["counts"]


def _published(case: Path) -> Path:
    version = Path((case / "stdout").read_text().strip().splitlines()[-1])
    assert version == case / "out" / "toy" / "v1"
    return version


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("stage", JOB_STAGES)
def test_a_fault_in_a_job_stage_ends_in_a_clean_error_or_a_rerun_that_recovers(matrix, tmp_path, tiny_lm,
                                                                          stage, fault):
    _skip_unless_possible(matrix, fault)
    case = tmp_path / "case"
    write_config(case, tiny_lm, rows=ROWS)
    out_root = case / "out"
    rc, err = matrix.server.run(case, ["run", "config.yaml"], stage, fault)
    (case / "stderr").rename(case / "fault-stderr")
    info = _fired(case, stage, fault)
    outcome = _outcome(rc, err, fault, info, out_root)
    _after_fault(case, info)
    if outcome == "done":  # the stage got past the fault: what it published is whole
        _assert_same_as_baseline(_published(case), matrix.baseline)
        return
    assert not list((out_root / "toy").glob("v*")), "a failed run published a version"
    stored = set(_store_entries(out_root))

    rc, err = matrix.server.run(case, ["run", "config.yaml"])
    assert rc == 0, err[-3000:]
    version = _published(case)
    _assert_same_as_baseline(version, matrix.baseline)
    # no answer paid twice: the rerun asked the teacher exactly for what the store lacked
    m = manifest(version)
    needed = set(pq.read_table(version / "teacher_keys.parquet")["key"].to_pylist())
    paid = m["teacher_usage"]["calls"] + m["teacher_audit"]["teacher_usage"]["calls"]
    assert paid == len(needed - stored)
    entries = _store_entries(out_root)
    assert sorted(entries) == sorted(set(entries)) and set(entries) == needed
    leftovers = [p for p in (out_root / "toy").iterdir() if p.name not in (".lock", ".staging", "v1")]
    assert leftovers == [] and not list((out_root / "toy" / ".staging").iterdir())


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_in_gc_ends_in_a_clean_error_or_a_rerun_that_recovers(matrix, tmp_path, fault):
    """A published version, a segment mixing one needed key with an unneeded one (gc rewrites
    it, first: its name sorts first) and a segment of unneeded keys only (gc removes it)."""
    from potstill import store
    from potstill.beam_pipelines.cli import main

    _skip_unless_possible(matrix, fault)
    case = tmp_path / "case"
    shutil.copytree(matrix.baseline.parents[2], case, symlinks=True)
    for name in ("fault.json", "stdout", "stderr"):
        (case / name).unlink(missing_ok=True)
    out_root = case / "out"
    version = out_root / "toy" / "v1"
    needed = set(pq.read_table(version / "teacher_keys.parquet")["key"].to_pylist())
    folder = Path(_model_folder([out_root])[0])
    kept = sorted(needed)[0]
    answer = store.lookup(str(folder), {kept})[kept]
    for name, keys in (("0-mixed", [kept, "unneeded-1"]), ("1-unneeded", ["unneeded-2", "unneeded-3"])):
        seg = Path(store.write_segment(str(folder), keys, [answer] * 2, [5, 5]))
        seg = seg.rename(folder / f"{name}.parquet")
        os.utime(seg, (time.time() - 7200, time.time() - 7200))
    gc = ["gc", "toy", "--root", str(out_root), "--grace-hours", "0"]

    rc, err = matrix.server.run(case, gc, "gc", fault)
    (case / "stderr").rename(case / "fault-stderr")
    info = _fired(case, "gc", fault)
    outcome = _outcome(rc, err, fault, info, out_root)
    if outcome == "error":
        assert "teacher store" in err, err[-3000:]
    _after_fault(case, info)
    assert set(store.lookup(str(folder), needed)) == needed, "gc lost an answer a version needs"

    if outcome != "done":
        rc, err = matrix.server.run(case, gc)
        assert rc == 0, err[-3000:]
    assert set(_store_entries(out_root)) == needed
    assert main(gc) == 0  # nothing left to collect
    _assert_same_as_baseline(version, matrix.baseline)
