"""End to end through the public CLI with the real packaged SmolLM2 teacher and MiniLM student."""
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from potstill.publish.contract import PUBLISHED_SCHEMA

pytestmark = pytest.mark.slow


def potstill(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "potstill", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt")
    subprocess.run([sys.executable, "-m", "potstill.beam_pipelines.demo_data", "--out", str(root / "data"),
                    "--seed-size", "8", "--unlabeled-size", "32", "--test-size", "16"], check=True)
    with open(root / "data" / "unlabeled.jsonl", "w") as fh:  # bad rows beside the good ones
        fh.write('{"text": ""}\n{"text": 3}\n{broken\n')
    (root / "config.yaml").write_text("""
dataset: rt-small
output_root: out
task:
  labels: [negative, positive]
  instruction: "Is the sentiment of this movie review negative or positive?"
corpus:
  unlabeled: {path: "data/unlabeled.*", text_field: text}
  seed: {path: data/seed.parquet, text_field: text, label_field: label}
  test: {path: data/test.parquet, text_field: text, label_field: label}
teacher: {model: smollm2-135m-instruct, batch_size: 8}
student: {model: all-minilm-l6-v2, encoder: finetune, epochs: 1, batch_size: 16}
""")
    return root


def test_run_then_train_with_real_models(project):
    version = potstill("run", "config.yaml", cwd=project)
    assert version.endswith("/rt-small/v1")
    manifest = json.loads(open(f"{version}/manifest.json").read())
    data = pq.read_table(f"{version}/data")
    assert data.schema.equals(PUBLISHED_SCHEMA, check_metadata=False)
    totals = manifest["counts"]["totals"]
    assert totals["read"] == 8 + 32 + 3
    assert totals["read"] == totals["published"] + totals["rejected"] + totals["filtered"]
    assert manifest["counts"]["rejected"] == {"empty_text": 1, "malformed_record": 1, "non_string_text": 1}
    assert manifest["models"]["teacher"]["sha256"].startswith("b179c952")
    assert manifest["teacher_audit"]["n"] == 8
    probs = data["label_probs"].to_pylist()
    assert all(abs(sum(p) - 1) < 1e-4 for p in probs)
    # a real model is not a coin: its distributions vary across rows
    assert len({round(p[0], 3) for p in probs}) > 5

    metrics = json.loads(potstill("train", "--dataset", version, "--config", "config.yaml",
                                  "--out", "student", cwd=project))
    assert metrics["n"] == 16 and 0 <= metrics["accuracy"] <= 1
    assert metrics["train_rows"] == data.num_rows
    saved = json.loads((project / "student" / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"]

    assert potstill("run", "config.yaml", cwd=project) == version  # unchanged: no new version


def test_budgeted_run_with_real_student_and_ta(project):
    """The real MiniLM warm-up student ranks the pool, the real SmolLM2 is teacher and TA, and
    sql/select.sql curates: 10 teacher calls over 2 rounds out of 32 pool rows."""
    version = potstill("run", "config.yaml", "--set", "dataset=rt-budget", "--set", "signals.enabled=true",
                       "--set", "budget.teacher_calls=10", "--set", "budget.rounds=2",
                       "--set", "curation.query=select.sql", "--set", "curation.need_scale=0",
                       "--set", "student.min_steps=4", cwd=project)
    manifest = json.loads(open(f"{version}/manifest.json").read())
    assert manifest["budget"]["spent"] == 10
    assert [r["teacher_calls"] for r in manifest["budget"]["rounds"]] == [5, 5]
    assert manifest["budget"]["rounds"][1]["student_trained_on"]["teacher_rows"] == 5
    assert manifest["models"]["ta"]["name"] == "smollm2-135m-instruct"
    filtered = pq.read_table(f"{version}/filtered.parquet").to_pylist()
    assert sum(r["filter_reason"] == "over_budget" for r in filtered) == 32 - 10
    data = pq.read_table(f"{version}/data").to_pylist()
    pool = [r for r in data if r["source"] == "corpus"]
    llkd = [r for r in filtered if r["filter_reason"].startswith("llkd_")]
    assert len(pool) + len(llkd) == 10 and len(pool) >= 1
    for row in pool:
        assert 0 < row["ta_teacher_confidence"] < 1 and 0 <= row["student_consistency"] <= 1
        assert 0.2 - 1e-6 <= row["weight"] <= 1 + 1e-6
    totals = manifest["counts"]["totals"]
    assert totals["read"] == totals["published"] + totals["rejected"] + totals["filtered"] == 8 + 32 + 3
