"""`potstill init`: deterministic, stratified splits of one labelled file and a config that loads."""
import csv
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potstill.config.core import load_config
from potstill.config.starter import StarterError, allocate, init
from potstill.rows.records import InputFileError

LABELS = {"billing": 30, "bug": 20, "feature": 10}


def labelled_rows():
    rows, i = [], 0
    for label, n in LABELS.items():
        for k in range(n):
            rows.append({"id": i, "body": f"ticket {k} about {label}, number {i}", "team": label})
            i += 1
    return rows


def write_csv(path, rows, fields=("id", "body", "team")):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, list(fields))
        w.writeheader()
        w.writerows(rows)
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def labelled(tmp_path):
    return write_csv(tmp_path / "tickets.csv", labelled_rows())


def test_splits_are_stratified_disjoint_and_cover_every_row(labelled, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = init(labelled, text_column="body", label_column="team", test_size=0.2, seed_size=12)
    folder = tmp_path / "jobs" / "tickets"
    assert tmp_path / got.config == folder / "config.yaml" and got.labels == ["billing", "bug", "feature"]
    seed, test = read_jsonl(folder / "seed.jsonl"), read_jsonl(folder / "test.jsonl")
    pool = read_jsonl(folder / "unlabeled.jsonl")
    assert got.rows == {"seed": 12, "test": 12, "unlabeled": 36, "unused": 0, "rejected": 0}
    # one row per label first, the rest in proportion to each label's other rows
    assert Counter(r["label"] for r in test) == {"billing": 6, "bug": 4, "feature": 2}
    assert Counter(r["label"] for r in seed) == {"billing": 6, "bug": 4, "feature": 2}
    assert all(set(r) == {"text"} for r in pool)  # the pool's labels are dropped
    texts = [r["text"] for r in seed + test + pool]
    assert len(texts) == len(set(texts)) == 60
    truth = {r["body"]: r["team"] for r in labelled_rows()}
    assert all(truth[r["text"]] == r["label"] for r in seed + test)
    # the config loads as `plan` and `run` read it, every split where init wrote it
    cfg = load_config(got.config)
    assert cfg.task.labels == got.labels and cfg.dataset == "tickets"
    assert cfg.corpus.seed.path == str(folder / "seed.jsonl")
    assert cfg.corpus.unlabeled.path == str(folder / "unlabeled.jsonl")
    assert cfg.output_root == str(tmp_path / "potstill-datasets")
    text = got.config.read_text()
    assert "labels dropped" in text and "instruction:" in text and "potstill plan" in text


def test_same_inputs_give_byte_identical_files_in_any_row_order(labelled, tmp_path):
    a = init(labelled, out=tmp_path / "a", text_column="body", label_column="team", seed_size=9)
    b = init(labelled, out=tmp_path / "b", text_column="body", label_column="team", seed_size=9)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["config.yaml", "seed.jsonl", "test.jsonl", "unlabeled.jsonl"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # the same rows in another order (and another file format) land in the same splits
    shuffled = labelled_rows()[::-1]
    parquet = tmp_path / "tickets.parquet"
    pq.write_table(pa.Table.from_pylist(shuffled), parquet)
    c = init(parquet, out=tmp_path / "c", text_column="body", label_column="team", seed_size=9)
    for split in ("seed", "test"):
        assert sorted(map(json.dumps, read_jsonl(c.files[split]))) == \
            sorted(map(json.dumps, read_jsonl(a.files[split])))
    # another --random-seed picks other rows, with the same class counts
    d = init(labelled, out=tmp_path / "d", text_column="body", label_column="team", seed_size=9,
             random_seed=1)
    assert read_jsonl(d.files["test"]) != read_jsonl(a.files["test"])
    assert Counter(r["label"] for r in read_jsonl(d.files["test"])) == \
        Counter(r["label"] for r in read_jsonl(a.files["test"]))
    assert b.rows == a.rows


def test_unusable_rows_and_duplicates_are_set_aside_with_their_line(tmp_path):
    rows = labelled_rows() + [{"id": 90, "body": "", "team": "bug"},
                              {"id": 91, "body": "ticket 0 about billing,   number 0", "team": "bug"},
                              {"id": 92, "body": "no label", "team": ""}]
    path = write_csv(tmp_path / "t.csv", rows)
    got = init(path, out=tmp_path / "job", text_column="body", label_column="team", seed_size=9)
    rejected = read_jsonl(tmp_path / "job" / "rejected.jsonl")
    assert [(r["reason"], r["input_ref"].rsplit(":", 1)[1]) for r in rejected] == \
        [("empty_text", "62"), ("duplicate", "63"), ("missing_label", "64")]
    assert "the same text as" in rejected[1]["detail"] and "'billing' there, 'bug' here" in rejected[1]["detail"]
    assert got.rows["rejected"] == 3 and sum(got.rows[k] for k in ("seed", "test", "unlabeled")) == 60
    assert "3 rows were set aside" in got.config.read_text()


def test_an_unlabeled_file_is_the_pool_and_the_rest_is_counted(labelled, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"body": "a new ticket"}\n')
    got = init(labelled, out=tmp_path / "job", unlabeled=pool, text_column="body",
               label_column="team", test_size=6, seed_size=9)
    assert not (tmp_path / "job" / "unlabeled.jsonl").exists()
    assert got.rows == {"seed": 9, "test": 6, "unused": 45, "rejected": 0}
    cfg = load_config(got.config)
    assert cfg.corpus.unlabeled.path == str(pool) and cfg.corpus.unlabeled.text_field == "body"
    assert "45 labelled rows" in got.config.read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(InputFileError, match=r"bad.jsonl: no row has the field\(s\) 'body'"):
        init(labelled, out=tmp_path / "job2", unlabeled=bad, text_column="body", label_column="team")


def test_errors_name_the_file_column_or_class_and_write_nothing(labelled, tmp_path):
    out = tmp_path / "job"
    with pytest.raises(InputFileError, match=r"tickets.csv: no column 'label' \(it has: 'id', 'body', 'team'\)"):
        init(labelled, out=out, text_column="body")
    rows = labelled_rows() + [{"id": 99, "body": "a lonely refund", "team": "refund"}]
    with pytest.raises(StarterError, match=r"t.csv, column 'team': label\(s\) 'refund' have only one usable row"):
        init(write_csv(tmp_path / "t.csv", rows), out=out, text_column="body", label_column="team")
    with pytest.raises(StarterError, match="'team' holds one label, 'bug'"):
        init(write_csv(tmp_path / "one.csv", [{"id": 1, "body": "x", "team": "bug"}]), out=out,
             text_column="body", label_column="team")
    with pytest.raises(StarterError, match="cannot hold 30 test rows and 30 seed rows and leave an unlabeled pool"):
        init(labelled, out=out, text_column="body", label_column="team", test_size=30, seed_size=30)
    with pytest.raises(StarterError, match="--test-size must be"):
        init(labelled, out=out, text_column="body", label_column="team", test_size="1.5")
    assert not out.exists()
    init(labelled, out=out, text_column="body", label_column="team")
    before = (out / "config.yaml").read_bytes()
    with pytest.raises(StarterError, match="never overwrites"):
        init(labelled, out=out, text_column="body", label_column="team", random_seed=3)
    assert (out / "config.yaml").read_bytes() == before


def test_allocate_gives_each_class_one_then_shares_the_rest():
    assert allocate(3, {"a": 5, "b": 5, "c": 2}, "x") == {"a": 1, "b": 1, "c": 1}
    assert allocate(12, {"a": 30, "b": 20, "c": 10}, "x") == {"a": 6, "b": 4, "c": 2}
    got = allocate(7, {"a": 3, "b": 3, "c": 3}, "x")
    assert sum(got.values()) == 7 and got == {"a": 3, "b": 2, "c": 2}  # ties in label order
    with pytest.raises(StarterError, match="fewer than the 3 labels"):
        allocate(2, {"a": 3, "b": 3, "c": 3}, "x")


@pytest.mark.parametrize("odd", ["Fresh 🍅", "a: b # c", 'say "hi"', "back\\slash", "line\u2028sep",
                                 "nel\u0085x", "- dash", "yes"])
def test_any_label_reads_back_from_the_config_exactly_as_in_the_splits(tmp_path, monkeypatch, odd):
    """A label outside the BMP written as a JSON escape ("\\ud83c\\udf45") reads back from YAML as
    two lone surrogates, and every gold row of it would be rejected as an unknown label."""
    from potstill.rows.records import read_file

    monkeypatch.chdir(tmp_path)
    rows = [{"id": i, "body": f"ticket {i} about {label}", "team": label}
            for i, label in enumerate([odd, "plain"] * 10)]
    got = init(write_csv(tmp_path / "t.csv", rows), text_column="body", label_column="team",
               test_size=4, seed_size=8)
    cfg = load_config(got.config)
    assert cfg.task.labels == sorted([odd, "plain"]) == got.labels
    seeds, rejected, _ = read_file(cfg.corpus.seed.path, source="seed", text_field="text",
                                   label_field="label", labels=cfg.task.labels)
    assert len(seeds) == 8 and not rejected
    if odd == "Fresh 🍅":
        assert "Fresh 🍅" in got.config.read_text()  # legible, not escaped
