"""The publish path streams: input digests in one pass, the version's files written from DuckDB
by batch, the GE gate in chunks; each gives what the whole-table way gives."""
import contextlib
import gzip
import hashlib
import io
import json
import platform
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potstill.publish import contract, curation, versions
from potstill import job, memory
from potstill.config.core import parse_config
from potstill.publish.expectations import validate, validate_file
from potstill.rows.records import read_file
from test_expectations import LABELS, make_row, table

ROWS = [{"text": f"row {i} " + "x" * (i % 50)} for i in range(3000)]


INPUTS = ["u.jsonl", "u.jsonl.gz", "u.parquet", "u.csv"]


def write_input(path):
    """ROWS in the format the name says; the JSONL files end in one malformed row."""
    if path.name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(ROWS), path, row_group_size=1000)
    elif path.name.endswith(".csv"):
        path.write_text("text\n" + "".join(f"{r['text']}\n" for r in ROWS))
    else:
        text = "".join(json.dumps(r) + "\n" for r in ROWS) + "{not json\n"  # a malformed row counts
        path.write_bytes(gzip.compress(text.encode()) if path.name.endswith(".gz") else text.encode())
    return path


@pytest.mark.parametrize("name", INPUTS)
def test_plan_digest_hashes_and_counts_each_input_in_one_pass(tmp_path, name):
    path = write_input(tmp_path / name)
    digest = job._file_digest(str(path))
    data = path.read_bytes()
    assert digest["sha256"] == hashlib.sha256(data).hexdigest() and digest["bytes"] == len(data)
    assert digest["rows"] == len(ROWS) + (0 if name.endswith((".parquet", ".csv")) else 1)



class CountingFile(io.RawIOBase):
    """A local file that counts how often each of its bytes is read."""

    def __init__(self, path):
        self.fh, self.reads = open(path, "rb"), [0] * path.stat().st_size

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        return self.fh.seek(offset, whence)

    def tell(self):
        return self.fh.tell()

    def readinto(self, buffer):
        start, data = self.fh.tell(), self.fh.read(len(buffer))
        buffer[:len(data)] = data
        for i in range(start, start + len(data)):
            self.reads[i] += 1
        return len(data)


@pytest.mark.parametrize("name", INPUTS)
def test_plan_reads_each_input_once_for_its_rows_and_its_hash(tmp_path, monkeypatch, name):
    """`potstill plan`'s reader (records.read_file) opens a file once and reads each byte once:
    the rows are parsed from the reads that hash them. Parquet: the footer (schema) is read
    first and again by the hash; every byte before it once."""
    path = write_input(tmp_path / name)
    opened = []

    @contextlib.contextmanager
    def counting_open(file, mode="rb"):
        opened.append(CountingFile(Path(file)))
        yield opened[-1]
        opened[-1].fh.close()

    monkeypatch.setattr(fsspec, "open", counting_open)
    records, rejected, digest = read_file(str(path), source="corpus", text_field="text")
    data = path.read_bytes()
    assert len(opened) == 1
    assert digest == {"path": str(path), "sha256": hashlib.sha256(data).hexdigest(),
                      "bytes": len(data), "rows": len(records) + len(rejected)}
    assert len(records) == len(ROWS)
    reads = opened[0].reads
    pages = len(data) - 8 - int.from_bytes(data[-8:-4], "little") if name.endswith(".parquet") \
        else len(data)
    assert set(reads[:pages]) == {1} and max(reads[pages:], default=1) <= 2

def rows(n, start=0):
    return [make_row(f"r{i:04d}", LABELS[i % 3], conf=0.5 + (i % 5) / 10,
                     source=contract.SOURCES[i % 2]) for i in range(start, start + n)]


def test_chunked_gate_gives_the_whole_tables_results(tmp_path):
    whole = table(*rows(50))
    pq.write_table(whole, tmp_path / "ok.parquet")
    a, b = validate(whole, LABELS, 10, 0.9, 5), validate_file(tmp_path / "ok.parquet", LABELS, 10, 0.9, 5, 7)
    assert a.success and b.success and a.results == b.results

    bad = rows(20)
    bad[3]["label"] = "nope"
    bad[17]["label"] = "nope"
    bad_table = table(*bad)
    pq.write_table(bad_table, tmp_path / "bad.parquet")
    a = validate(bad_table, LABELS, 25)  # too few rows, and two unknown labels in two chunks
    b = validate_file(tmp_path / "bad.parquet", LABELS, 25, chunk_rows=6)
    assert not b.success and a.results == b.results
    assert [(f["expectation"], f["column"], f["unexpected_count"]) for f in a.failures] == \
        [(f["expectation"], f["column"], f["unexpected_count"]) for f in b.failures]


def test_chunked_gate_finds_an_id_repeated_across_a_chunk_boundary(tmp_path):
    dup = rows(12)
    dup[6] = {**dup[6], "id": dup[5]["id"]}  # rows 5 and 6: the last of chunk 1, first of chunk 2
    pq.write_table(table(*dup), tmp_path / "dup.parquet")
    report = validate_file(tmp_path / "dup.parquet", LABELS, 1, chunk_rows=6)
    unique = [f for f in report.failures if f["expectation"] == "expect_column_values_to_be_unique"]
    assert not report.success and unique and unique[0]["unexpected_count"] == 2


def test_streamed_version_files_equal_the_in_memory_curation(tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    staging.mkdir()
    shards = [rows(40, 0), rows(40, 40), rows(25, 80)]
    for i, part in enumerate(shards):
        pq.write_table(table(*reversed(part)), staging / f"scored-r1-{i}.parquet")
    early = [{**r, "filter_reason": "duplicate"} for r in rows(3, 200)]
    pq.write_table(pa.Table.from_pylist(early, schema=contract.FILTERED_SCHEMA), staging / "filtered-r1-0.parquet")
    reject = [{"source": "corpus", "input_ref": f"u.jsonl:{i}", "reason": "empty_text", "detail": None,
               "raw": None} for i in (9, 2, 5)]
    pq.write_table(pa.Table.from_pylist(reject, schema=contract.REJECTED_SCHEMA), staging / "rejected-r1-0.parquet")
    cfg = parse_config({"dataset": "t", "output_root": str(tmp_path / "out"), "task": {"labels": LABELS},
                        "corpus": {"unlabeled": {"path": str(tmp_path / "u.jsonl")}},
                        "teacher": {"model": "m"}, "curation": {"min_confidence": 0.6}})
    monkeypatch.setattr(job, "BATCH_ROWS", 16)  # several batches per file

    curated, counts = job.prepare_version(cfg, staging, tmp_path / "v", driver_keys=["k2", "k1", "k2"])
    expected = curation.curate(sorted(str(p) for p in staging.glob("scored*")), LABELS, cfg.curation)
    published = pq.read_table(tmp_path / "v" / versions.DATA_FILE)
    assert published.schema.equals(contract.PUBLISHED_SCHEMA, check_metadata=False)
    assert published.equals(expected.published) and published.num_rows > 0
    filtered = pq.read_table(tmp_path / "v" / "filtered.parquet")
    assert filtered["id"].to_pylist() == [r["id"] for r in early] + expected.filtered["id"].to_pylist()
    assert pq.read_table(tmp_path / "v" / "rejected.parquet")["input_ref"].to_pylist() == \
        ["u.jsonl:2", "u.jsonl:5", "u.jsonl:9"]
    assert pq.read_table(tmp_path / "v" / "teacher_keys.parquet")["key"].to_pylist() == ["k1", "k2"]
    assert counts["totals"] == {"read": 105 + 3 + 3, "published": published.num_rows, "rejected": 3,
                                "filtered": 3 + expected.filtered.num_rows}
    assert curated.sql == expected.sql and curated.params == expected.params



def test_release_trims_glibc_s_arenas_where_it_can():
    """memory.release() runs between the stages of job.finish on any platform; on glibc it
    calls malloc_trim (the measured effect is in the README, "Memory at scale")."""
    memory.release()
    if platform.libc_ver()[0] == "glibc":
        assert memory._malloc_trim() is not None
