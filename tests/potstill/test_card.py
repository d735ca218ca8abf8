"""The dataset card: every version loads with Hugging Face `datasets` as it is published."""
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from potstill.publish import card, contract, versions

LABELS = ["neg", "pos"]


def _row(i, label, source="corpus"):
    p = 0.8 if label == "pos" else 0.2
    return {"id": f"r{i}", "text": f"text number {i}", "label": label, "label_probs": [1 - p, p],
            "teacher_label": label, "teacher_confidence": max(p, 1 - p), "teacher_entropy": 0.5,
            "teacher_margin": 0.6, "gold_label": label if source == "seed" else None,
            "source": source, "weight": 1.0}


@pytest.fixture
def version(tmp_path):
    rows = [_row(i, LABELS[i % 2], "seed" if i < 2 else "corpus") for i in range(7)]
    published = pa.Table.from_pylist(rows, schema=contract.PUBLISHED_SCHEMA)
    filtered = pa.Table.from_pylist([{**_row(9, "pos"), "filter_reason": "low_confidence"}],
                                    schema=contract.FILTERED_SCHEMA)
    rejected = pa.Table.from_pylist([{"source": "corpus", "input_ref": "in.csv:3",
                                      "reason": "empty_text", "detail": None, "raw": "{}"}],
                                    schema=contract.REJECTED_SCHEMA)
    manifest = {"labels": LABELS, "fingerprint": "fp", "config_digest": "abc",
                "models": {"teacher": {"name": "tiny", "sha256": "f" * 64, "source": "x"}},
                "teacher_audit": {"n": 2, "accuracy": 0.5, "calibrated": {"macro_f1": 0.33}},
                "counts": {"totals": {"read": 9, "published": 7, "filtered": 1, "rejected": 1},
                           "rejected": {"empty_text": 1}, "filtered": {"low_confidence": 1}},
                "validation": {"success": True}}
    return versions.publish(tmp_path / "out", "toy", published=published, filtered=filtered,
                            rejected=rejected, manifest=manifest), rows


def test_card_is_part_of_the_version_with_configs_and_class_feature(version):
    vdir, rows = version
    text = (vdir / card.CARD).read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["configs"] == [{"config_name": "default", "default": True,
                                 "data_files": [{"split": "train", "path": "data/*.parquet"}]}]
    label = next(f for f in front["dataset_info"]["features"] if f["name"] == "label")
    assert label["dtype"]["class_label"]["names"] == {"0": "neg", "1": "pos"}
    sizes = card.data_sizes(sorted((vdir / "data").glob("*.parquet")))
    assert sizes["num_bytes"] > 0 and sizes["download_size"] > 0
    assert front["dataset_info"]["splits"] == [{"name": "train", "num_bytes": sizes["num_bytes"],
                                                "num_examples": 7}]
    assert "license" in front
    for needle in ("## Intended use", "| accuracy (calibrated) | 0.5000 |", "tiny",
                   "empty_text 1", "## Lineage", "`label_probs`",
                   "`rejected.parquet` and `filtered.parquet` beside this card"):
        assert needle in text, needle


def test_load_dataset_returns_exactly_the_published_rows(version, tmp_path):
    # In a fresh process (as a consumer would), cwd away from the repository.
    vdir, rows = version
    # Every warning and every datasets log record at WARNING or above is caught and printed: a
    # card the loader finds malformed (e.g. splits without num_bytes) says so only this way.
    script = f"""
import json, logging, warnings, datasets
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("datasets").addHandler(Keep(level=logging.WARNING))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ds = datasets.load_dataset({str(vdir)!r}, cache_dir={str(tmp_path / 'cache')!r})
assert list(ds) == ["train"], list(ds)
train = ds["train"]
print(json.dumps({{"names": train.features["label"].names,
                  "kind": type(train.features["label"]).__name__,
                  "warnings": [str(w.message) for w in caught] + records,
                  "split": {{"num_bytes": train.info.splits["train"].num_bytes,
                            "num_examples": train.info.splits["train"].num_examples}},
                  "rows": [{{**r, "label": train.features["label"].int2str(r["label"])}} for r in train]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                                            "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert got["kind"] == "ClassLabel" and got["names"] == LABELS
    assert got["warnings"] == [], got["warnings"]
    front = yaml.safe_load((vdir / card.CARD).read_text().split("---\n")[1])
    assert [got["split"]] == [{k: s[k] for k in ("num_bytes", "num_examples")}
                              for s in front["dataset_info"]["splits"]]
    expected = pq.read_table(vdir / "data" / "part-0.parquet").to_pylist()
    assert len(got["rows"]) == len(rows) == len(expected)
    key = lambda r: r["id"]  # noqa: E731
    for g, e in zip(sorted(got["rows"], key=key), sorted(expected, key=key)):
        assert g.keys() == e.keys()
        for k in e:
            if isinstance(e[k], float):
                assert g[k] == pytest.approx(e[k]), k
            elif isinstance(e[k], list):
                assert g[k] == pytest.approx(e[k]), k
            else:
                assert g[k] == e[k], k


def _cli(capsys, *argv):
    from potstill.beam_pipelines.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_export_hf_writes_a_loadable_writable_copy(version, tmp_path, capsys):
    vdir, rows = version
    out_dir = tmp_path / "hub"
    code, out, err = _cli(capsys, "export", str(vdir), "--to", "hf", str(out_dir))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(out_dir)
    names = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    assert "README.md" in names and "data/part-0.parquet" in names and "manifest.json" in names
    # the audit trail the card speaks of travels with it
    assert "rejected.parquet" in names and "filtered.parquet" in names
    assert pq.read_table(out_dir / "rejected.parquet").column("reason").to_pylist() == ["empty_text"]
    assert "`rejected.parquet` and `filtered.parquet` beside this card" in (out_dir / "README.md").read_text()
    assert all(os.access(out_dir / n, os.W_OK) for n in names)
    assert pq.read_table(out_dir / "data" / "part-0.parquet").num_rows == len(rows)
    # a second export into the same (now full) folder is refused, not merged
    code, _, err = _cli(capsys, "export", str(vdir), "--to", "hf", str(out_dir))
    assert code == 2 and "not empty" in err


def test_export_without_audit_rows_leaves_them_out_and_the_card_says_so(version, tmp_path, capsys):
    vdir, _ = version
    out_dir = tmp_path / "hub"
    code, _, err = _cli(capsys, "export", str(vdir), "--to", "hf", str(out_dir), "--no-audit-rows")
    assert code == 0, err
    names = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    assert "rejected.parquet" not in names and "filtered.parquet" not in names
    text = (out_dir / "README.md").read_text()
    assert "beside this card" not in text and "which this copy leaves out" in text
    # the rest of the card is the version's own
    assert text.split("## Where the rows went")[0] == (vdir / card.CARD).read_text().split(
        "## Where the rows went")[0]


def test_the_parquet_schema_carries_the_label_order(version):
    import json

    import pandas as pd

    vdir, _ = version
    manifest = json.loads((vdir / "manifest.json").read_text())
    for name in ("data/part-0.parquet", "filtered.parquet"):
        schema = pq.read_schema(vdir / name)
        assert pa.types.is_list(schema.field("label_probs").type)  # the published type is kept
        assert json.loads(schema.field("label_probs").metadata[b"labels"]) == manifest["labels"]
        assert json.loads(schema.metadata[b"labels"]) == manifest["labels"] == LABELS
        assert contract.labels_of(schema) == LABELS
        assert schema.field("label_probs").metadata[b"doc"]  # the contract's doc stays
    assert pd.read_parquet(vdir / "data" / "part-0.parquet").attrs["labels"] == LABELS


def test_push_needs_a_token_from_the_environment_and_fails_cleanly_offline(version, tmp_path,
                                                                          capsys, monkeypatch):
    vdir, _ = version
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code, _, err = _cli(capsys, "export", str(vdir), "--to", "hf", str(tmp_path / "a"),
                        "--push", "someone/toy")
    assert code == 2 and "HF_TOKEN" in err and "Traceback" not in err
    secret = "hf_SECRETtoken1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no network
    code, out, err = _cli(capsys, "export", str(vdir), "--to", "hf", str(tmp_path / "b"),
                          "--push", "someone/toy")
    assert code == 2 and "push to someone/toy failed" in err and "Traceback" not in err
    assert secret not in out + err
    assert (tmp_path / "b" / "README.md").is_file()  # the export itself is done
