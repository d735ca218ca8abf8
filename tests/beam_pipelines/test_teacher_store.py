"""Teacher work is never paid twice: the teacher store, resume after a kill, stage fingerprints,
determinism, one run per dataset, and a poisoned row. Real DirectRunner, a tiny random teacher."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from potstill.beam_pipelines.pipeline import run
from potstill import store
from potstill.config.core import load_config

ROOT = Path(__file__).resolve().parents[2]
WORDS = "good bad fine dull great awful film plot acting music pacing story".split()


def corpus(n: int) -> list[dict]:
    return [{"text": f"{WORDS[i % 12]} {WORDS[(i * 7) % 12]} {WORDS[(i * 5) % 12]} number {i}"}
            for i in range(n)]


def write_config(folder: Path, tiny_lm: str, rows: int = 12, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus(rows)))
    (folder / "s.jsonl").write_text(json.dumps({"text": "good", "label": "positive"}) + "\n"
                                    + json.dumps({"text": "bad", "label": "negative"}) + "\n")
    cfg = {"dataset": "toy", "output_root": "out", "task": {"labels": ["negative", "positive"]},
           "corpus": {"unlabeled": {"path": "u.jsonl"}, "seed": {"path": "s.jsonl"}},
           "teacher": {"model": tiny_lm, "batch_size": 2, "threads": 1}, **extra}
    path = folder / "config.yaml"
    path.write_text(json.dumps(cfg))
    return path


def manifest(version: Path) -> dict:
    return json.loads((version / "manifest.json").read_text())


def data_bytes(version: Path) -> bytes:
    return (version / "data" / "part-0.parquet").read_bytes()


def cli(config: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "potstill", "run", str(config), *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def test_curation_change_reuses_every_answer_and_student_change_publishes_nothing(tmp_path, tiny_lm):
    path = write_config(tmp_path, tiny_lm)
    v1 = run(load_config(path))
    usage = manifest(v1)["teacher_usage"]
    # the 2 seed rows were answered by the audit (on the driver, into the store): not paid again
    assert usage["rows"] == 14 and usage["calls"] == 12 and usage["cache_hits"] == 2
    assert usage["prompt_tokens"] > 14 * 10

    v2 = run(load_config(path, ["curation.min_confidence=0.5"]))
    usage = manifest(v2)["teacher_usage"]
    assert v2.name == "v2" and usage["calls"] == 0 and usage["cache_hits"] == 14
    assert manifest(v1)["teacher_audit"]["teacher_usage"] == {"calls": 2, "cache_hits": 0}
    assert manifest(v2)["teacher_audit"]["teacher_usage"] == {"calls": 0, "cache_hits": 2}
    shared = set(pq.read_table(v2 / "data")["id"].to_pylist()) | set(
        pq.read_table(v2 / "filtered.parquet")["id"].to_pylist())
    assert set(pq.read_table(v1 / "data")["id"].to_pylist()) <= shared

    # the student's settings cannot change the data: the same version, nothing new
    assert run(load_config(path, ["curation.min_confidence=0.5", "student.learning_rate=1e-4"])) == v2


def test_editing_the_sql_text_publishes_a_new_version(tmp_path, tiny_lm):
    query = tmp_path / "my.sql"
    query.write_text((ROOT / "sql" / "curate.sql").read_text())
    path = write_config(tmp_path, tiny_lm, curation={"query": str(query)})
    v1 = run(load_config(path))
    assert run(load_config(path)) == v1
    query.write_text(query.read_text() + "\n-- an analyst's edit\n")
    v2 = run(load_config(path))
    assert v2.name == "v2" and manifest(v2)["teacher_usage"]["calls"] == 0


def test_two_fresh_runs_publish_identical_bytes(tmp_path, tiny_lm):
    a = run(load_config(write_config(tmp_path / "a", tiny_lm, rows=30)))
    b = run(load_config(write_config(tmp_path / "b", tiny_lm, rows=30)))
    assert data_bytes(a) == data_bytes(b)


def poisoned_job(tmp_path, tiny_lm, monkeypatch, retries: int, failing=lambda: True,
                 tries: list | None = None) -> Path:
    """7 rows and "a POISON row" the teacher raises on while `failing()` (each call on it is
    counted in `tries`); returns the config."""
    from potstill.models.teacher.hf import HFTeacher

    score = HFTeacher.score_encoded

    def poisoned(self, encoded):
        if any("POISON" in self.tokenizer.decode(e.ids) for e in encoded):
            if tries is not None:
                tries.append(len(encoded))
            if failing():
                raise ValueError("the model cannot read this row")
        return score(self, encoded)
    monkeypatch.setattr(HFTeacher, "score_encoded", poisoned)
    path = write_config(tmp_path, tiny_lm, rows=7, teacher={"model": tiny_lm, "batch_size": 8,
                                                            "max_retries": retries})
    with open(tmp_path / "u.jsonl", "a") as fh:
        fh.write(json.dumps({"text": "a POISON row"}) + "\n")
    return path


def test_a_poisoned_row_is_the_only_one_rejected(tmp_path, tiny_lm, monkeypatch):
    version = run(load_config(poisoned_job(tmp_path, tiny_lm, monkeypatch, retries=1)))
    rejected = pq.read_table(version / "rejected.parquet").to_pylist()
    assert [(r["reason"], r["raw"]) for r in rejected] == [("teacher_error", "a POISON row")]
    assert "cannot read this row" in rejected[0]["detail"]
    m = manifest(version)
    assert m["counts"]["totals"]["published"] == 9 and m["counts"]["totals"]["rejected"] == 1
    assert m["teacher_usage"]["retries"] >= 1


def test_a_kill_leaves_nothing_half_published_and_the_rerun_cleans_up(tmp_path, tiny_lm):
    """What a SIGKILL during publish leaves (a `.tmp-*` folder holding a v1 manifest) and during
    scoring (a staging folder) is removed by the next run, which publishes v1 cleanly."""
    path = write_config(tmp_path, tiny_lm)
    ds = tmp_path / "out" / "toy"
    (ds / ".tmp-deadbeef" / "data").mkdir(parents=True)
    (ds / ".tmp-deadbeef" / "manifest.json").write_text('{"version": "v1"}')
    (ds / ".staging" / "0123456789ab").mkdir(parents=True)
    version = run(load_config(path))
    assert version.name == "v1" and sorted(p.name for p in ds.iterdir()) == [".lock", ".staging", "v1"]
    assert not list((ds / ".staging").iterdir())


def test_sigkill_mid_scoring_then_rerun_pays_only_the_missing_rows(tmp_path, tiny_lm):
    rows = 400
    path = write_config(tmp_path / "killed", tiny_lm, rows=rows, teacher={
        "model": tiny_lm, "batch_size": 1, "threads": 1})
    segments = lambda: store.segments(f"{tmp_path}/killed/out/{store.STORE_DIR}")
    proc = cli(path)
    deadline = time.time() + 300
    while len(segments()) < 20 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: raise `rows`"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    answered = sum(pq.read_metadata(s).num_rows for s in segments())
    assert 20 <= answered < rows + 2

    rerun = cli(path)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    version = Path(out.strip().splitlines()[-1])
    usage = manifest(version)["teacher_usage"]
    assert usage["calls"] == rows + 2 - answered and usage["cache_hits"] == answered
    assert usage["calls"] < rows
    assert not list((tmp_path / "killed" / "out" / "toy" / ".staging").iterdir())

    fresh = run(load_config(write_config(tmp_path / "fresh", tiny_lm, rows=rows, teacher={
        "model": tiny_lm, "batch_size": 1, "threads": 1})))
    assert data_bytes(version) == data_bytes(fresh)


def test_two_concurrent_identical_runs_publish_one_version(tmp_path, tiny_lm):
    path = write_config(tmp_path, tiny_lm)
    first, second = cli(path), cli(path)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    printed = {o.strip().splitlines()[-1] for o, _ in outs}
    assert printed == {str(tmp_path / "out" / "toy" / "v1")}
    assert sorted(p.name for p in (tmp_path / "out" / "toy").glob("v*")) == ["v1"]


def test_gc_removes_only_store_entries_no_version_needs(tmp_path, tiny_lm, capsys):
    from potstill.beam_pipelines.cli import main

    path = write_config(tmp_path, tiny_lm)
    version = run(load_config(path))
    needed = set(pq.read_table(version / "teacher_keys.parquet")["key"].to_pylist())
    assert len(needed) == 14  # 12 corpus + 2 seed rows (the audit's requests are the seed rows')
    folder = store.model_dir(str(tmp_path / "out"), manifest(version)["models"]["teacher"]["sha256"])
    store.write_segment(folder, ["orphan-1", "orphan-2"], [[0.0, -1.0], [0.0, -2.0]], [5, 5])
    root = str(tmp_path / "out")

    assert main(["gc", "toy", "--root", root, "--dry-run", "--grace-hours", "0"]) == 0
    dry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert dry["store"]["entries_removed"] == 2 and dry["store"]["removed"] == 1
    assert "orphan-1" in store.lookup(folder, {"orphan-1"})  # a dry run removes nothing

    assert main(["gc", "toy", "--root", root, "--grace-hours", "0"]) == 0
    assert not store.lookup(folder, {"orphan-1", "orphan-2"})
    assert set(store.lookup(folder, needed)) == needed
    again = run(load_config(path, ["curation.min_confidence=0.4"]))  # still nothing to pay
    assert manifest(again)["teacher_usage"]["calls"] == 0


def test_gc_of_one_dataset_leaves_a_live_run_of_another_alone(tmp_path, tiny_lm, capsys):
    """A run of dataset `other` under the same root (simulated: a process holding its store
    lease) has answered for two hours and published nothing yet: `gc toy` removes none of its
    answers. Once that process is gone (SIGKILL: its lease stays behind), gc says the lease is
    stale, removes it, and collects what no version needs."""
    from potstill.beam_pipelines.cli import main

    version = run(load_config(write_config(tmp_path, tiny_lm, rows=4)))
    root = str(tmp_path / "out")
    folder = store.model_dir(root, manifest(version)["models"]["teacher"]["sha256"])
    seg = store.write_segment(folder, ["other-run-1", "other-run-2"], [[0.0, -1.0]] * 2, [5, 5])
    two_hours_ago = time.time() - 7200
    os.utime(seg, (two_hours_ago, two_hours_ago))
    code = ("import sys, time; from potstill import store\n"
            "lease = store.run_lease(sys.argv[1], 'other'); print(lease.__enter__(), flush=True)\n"
            "time.sleep(600)\n")
    other = subprocess.Popen([sys.executable, "-c", code, root], cwd=ROOT, stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    try:
        lease = other.stdout.readline().strip()
        for args in (["--dry-run"], []):
            assert main(["gc", "toy", "--root", root, *args]) == 0
            report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["store"]
            assert report["skipped"] and report["live_leases"][0]["path"] == lease
            assert report["live_leases"][0]["dataset"] == "other" and report["entries_removed"] == 0
        assert store.lookup(folder, {"other-run-1", "other-run-2"}).keys() == {"other-run-1", "other-run-2"}
    finally:
        other.kill()
        other.wait()
    assert main(["gc", "toy", "--root", root]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["store"]
    assert report["skipped"] is None and report["stale_leases"][0]["path"] == lease
    assert report["entries_removed"] == 2 and not Path(lease).exists()
    needed = set(pq.read_table(version / "teacher_keys.parquet")["key"].to_pylist())
    assert set(store.lookup(folder, needed)) == needed


def test_gc_dry_run_reports_exactly_what_gc_removes(tmp_path, capsys):
    """Leftovers of dead runs (a half-published `.tmp-*` version, a staging folder), a dead
    writer's temporary segment and an orphan segment: the dry run lists what the real gc then
    removes, item for item, and removes nothing itself."""
    from potstill.beam_pipelines.cli import main

    root = tmp_path / "out"
    ds = root / "toy"
    (ds / ".tmp-deadbeef" / "data").mkdir(parents=True)
    (ds / ".staging" / "0123456789ab").mkdir(parents=True)
    (ds / "v1").mkdir()
    folder = store.model_dir(str(root), "ab" * 32)
    orphan = store.write_segment(folder, ["orphan"], [[0.0, -1.0]], [3])
    dead = Path(folder) / ".tmp-dead.parquet"
    dead.write_bytes(b"half a segment")
    for path in (orphan, dead):
        os.utime(path, (time.time() - 7200, time.time() - 7200))

    def gc(*args: str) -> dict:
        assert main(["gc", "toy", "--root", str(root), *args]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    dry = gc("--dry-run")
    assert dry["dry_run"] is True and len(dry["leftovers_removed"]) == 2
    assert (ds / ".tmp-deadbeef").is_dir() and dead.exists() and Path(orphan).exists()
    real = gc()
    assert real["leftovers_removed"] == dry["leftovers_removed"]
    assert {k: v for k, v in real["store"].items() if k != "dry_run"} == \
        {k: v for k, v in dry["store"].items() if k != "dry_run"}
    assert real["store"]["temporary_removed"] == 1 and real["store"]["removed"] == 1
    assert sorted(p.name for p in ds.iterdir()) == [".lock", ".staging", "v1"]
    assert not dead.exists() and not Path(orphan).exists()
    assert gc("--dry-run")["leftovers_removed"] == []


def test_gc_of_an_unknown_dataset_or_a_bad_grace_exits_2_and_creates_nothing(tmp_path, capsys):
    from potstill.beam_pipelines.cli import main

    (tmp_path / "toy").mkdir()
    assert main(["gc", "tyo", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no dataset 'tyo'" in err and "toy" in err and not (tmp_path / "tyo").exists()
    assert main(["gc", "toy", "--root", str(tmp_path), "--grace-hours", "-1"]) == 2
    assert "--grace-hours" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_one_store_owns_a_teachers_keys_folder_and_segments(tmp_path):
    from potstill.store import TeacherStore, request_key

    s = TeacherStore.open(str(tmp_path), "ab" * 32, "int8x2")
    assert s.source == "ab" * 32 + ":int8x2" and s.folder == store.model_dir(str(tmp_path), "ab" * 32)
    key = s.key([1, 2], [[3]])
    assert key == request_key(s.source, [1, 2], [[3]])
    assert key != TeacherStore.open(str(tmp_path), "ab" * 32).key([1, 2], [[3]])  # float32 answers differ
    s.write([key], [[-0.5]], [2])
    assert s.keys() == {key} and s.index().lookup({key}) == {key: [-0.5]}
    assert TeacherStore("ab").segments() == [] and TeacherStore("ab").keys() == set()  # keys only


def test_an_unwritable_store_stops_the_job_before_any_model_loads(tmp_path, tiny_lm, capsys, monkeypatch):
    """A file where the store's folder should be cannot be written by anyone, root included."""
    from potstill.beam_pipelines.cli import main
    from potstill.models.teacher.teacher_setup import TeacherSetup

    path = write_config(tmp_path, tiny_lm, rows=4)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / store.STORE_DIR).write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(TeacherSetup, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "the teacher store" in err and store.STORE_DIR in err and "cannot be written" in err
    assert not (tmp_path / "out" / "toy" / "v1").exists()


def test_rows_the_teacher_did_not_answer_are_retried_by_the_next_run(tmp_path, tiny_lm, monkeypatch):
    """A failed call is not remembered as done: the rerun asks again for those rows only."""
    from potstill.models.teacher.hf import HFTeacher

    score, failing = HFTeacher.score_encoded, {"on": True}

    def flaky(self, encoded):
        if failing["on"] and any("number 3" in self.tokenizer.decode(e.ids) for e in encoded):
            raise ConnectionError("the device went away")
        return score(self, encoded)
    monkeypatch.setattr(HFTeacher, "score_encoded", flaky)
    path = write_config(tmp_path, tiny_lm, rows=6, teacher={"model": tiny_lm, "batch_size": 2,
                                                            "threads": 1, "max_retries": 0})
    first = run(load_config(path))
    assert manifest(first)["counts"]["rejected"] == {"teacher_error": 1}
    failing["on"] = False
    second = run(load_config(path))
    assert second != first and manifest(second)["counts"]["rejected"] == {}
    assert manifest(second)["counts"]["totals"]["published"] == manifest(first)["counts"]["totals"]["published"] + 1
    assert manifest(second)["teacher_usage"]["calls"] == 1  # only the row that failed
    assert run(load_config(path)) == second  # now nothing is left to do


def test_a_run_holds_a_store_lease_until_it_has_published(tmp_path, tiny_lm, monkeypatch):
    from potstill import job

    seen, finish = {}, job.finish

    def spy(cfg, *a, **k):
        seen["during"] = [lease.dataset for lease in store.live_leases(cfg.output_root)]
        return finish(cfg, *a, **k)
    monkeypatch.setattr(job, "finish", spy)
    run(load_config(write_config(tmp_path, tiny_lm, rows=4)))
    assert seen["during"] == ["toy"] and store.live_leases(str(tmp_path / "out")) == []


def test_a_row_the_teacher_always_rejects_is_retried_but_publishes_no_new_version(tmp_path, tiny_lm,
                                                                                  monkeypatch, caplog):
    """A permanent teacher_error: every rerun asks the teacher again for that row (an error may
    be transient), and when it fails again and nothing else changed the run publishes nothing
    new, says "unchanged" and how many rows still fail. Once the row is answered, a new version."""
    tries, failing = [], {"on": True}
    path = poisoned_job(tmp_path, tiny_lm, monkeypatch, retries=0, failing=lambda: failing["on"],
                        tries=tries)
    first = run(load_config(path))
    assert manifest(first)["counts"]["rejected"] == {"teacher_error": 1}
    for _ in range(2):
        asked = len(tries)
        caplog.clear()
        with caplog.at_level("INFO"):
            assert run(load_config(path)) == first
        assert len(tries) > asked  # asked again
        assert any(r.getMessage().startswith("unchanged:") for r in caplog.records)
        assert f"1 row still fails in the teacher (their errors: {first / 'rejected.parquet'})" in caplog.text
    assert sorted(p.name for p in first.parent.glob("v*")) == ["v1"]

    failing["on"] = False  # the error was transient after all
    second = run(load_config(path))
    assert second.name == "v2" and manifest(second)["counts"]["rejected"] == {}
    assert manifest(second)["teacher_usage"]["calls"] == 1


@pytest.mark.parametrize("lookup_answers", [0, 10_000])
def test_a_store_joined_by_key_or_looked_up_in_memory_answers_every_stored_row(
        tmp_path, tiny_lm, caplog, lookup_answers):
    """A store of at most teacher.store_lookup_answers answers is looked up in memory (no
    shuffle of every row), a larger one is joined by key: either way the rerun asks nothing and
    publishes the same rows."""
    path = write_config(tmp_path, tiny_lm)
    v1 = run(load_config(path))
    folder = str(tmp_path / "out" / store.STORE_DIR)
    assert store.answer_count(store.segments(folder)) == 14
    assert store.answer_count(store.segments(folder), more_than=3) <= 14
    with caplog.at_level(logging.INFO, logger="potstill.transforms.teacher"):
        v2 = run(load_config(path, ["curation.min_confidence=0.5",
                                    f"teacher.store_lookup_answers={lookup_answers}"]))
    said = "joined with the rows by key" if lookup_answers == 0 else "14 answers are looked up in memory"
    assert said in caplog.text
    usage = manifest(v2)["teacher_usage"]
    assert v2 != v1 and usage["calls"] == 0 and usage["cache_hits"] == 14
    table = lambda v: pq.read_table(v / "data").sort_by("id").select(["id", "label_probs", "teacher_label"])
    published = table(v2)
    assert 0 < published.num_rows <= table(v1).num_rows
    kept = set(published["id"].to_pylist())
    same = table(v1).filter([i in kept for i in table(v1)["id"].to_pylist()])
    assert same.equals(published)


def test_rows_grouped_before_or_after_encoding_make_the_same_batches_and_data(tmp_path, tiny_lm, caplog):
    """A small store (looked up in memory): records are grouped, then encoded (EncodeGroups); a
    large one (joined by key): encoded, joined, then grouped. Each path cuts the same canonical
    batches (the store's segments hold the same sets of keys) and publishes the same bytes."""
    def fresh(folder, lookup_answers):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="potstill.transforms.teacher"):
            version = run(load_config(write_config(tmp_path / folder, tiny_lm, rows=90, teacher={
                "model": tiny_lm, "batch_size": 4, "threads": 1, "store_lookup_answers": lookup_answers})))
        said = "joined with the rows by key" if lookup_answers == 0 else "looked up in memory"
        assert said in caplog.text
        batches = {frozenset(pq.read_table(s)["key"].to_pylist())
                   for s in store.segments(str(tmp_path / folder / "out" / store.STORE_DIR))}
        return version, batches

    grouped_first, batches_a = fresh("lookup", 10_000)
    joined, batches_b = fresh("join", 0)
    assert len(batches_a) > 20 and batches_a == batches_b
    assert data_bytes(grouped_first) == data_bytes(joined)
    assert manifest(grouped_first)["teacher_usage"] == manifest(joined)["teacher_usage"]


def test_request_keys_are_the_sha256_of_the_requests_json_as_stores_have_always_held():
    """Keys are how earlier runs' answers are found: hashing the JSON in parts (per teacher,
    kept) must give the same digest as hashing it whole, for any ids and candidates."""
    import hashlib
    import json
    import random

    from potstill.store import request_key

    rng = random.Random(0)
    for source in ("ab" * 32, "ab" * 32 + ":int8x2", 'remote "x"/\u00e9'):
        for _ in range(50):
            ids = [rng.randrange(200_000) for _ in range(rng.randrange(0, 40))]
            cands = [[rng.randrange(200_000) for _ in range(rng.randrange(1, 4))] for _ in range(rng.randrange(0, 5))]
            whole = json.dumps([source, ids, cands], separators=(",", ":"))
            assert request_key(source, ids, cands) == hashlib.sha256(whole.encode()).hexdigest()
    assert request_key("s", [1, 2], [[3]]) == hashlib.sha256(b'["s",[1,2],[[3]]]').hexdigest()
