"""The Python API (potstill.plan/run/train/evaluate/open_version/init), as a notebook uses it,
and `potstill init` -> plan -> run on one labelled CSV; a tiny random teacher and student."""
import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import potstill
from potstill.beam_pipelines.cli import main
from potstill.config.core import ConfigError

LABELS = ["negative", "positive"]
GOOD = ["good", "great", "lovely", "fine", "superb", "brilliant"]
BAD = ["bad", "awful", "terrible", "poor", "dreadful", "boring"]
NOUNS = ["film", "movie", "plot", "cast", "score"]


def toy_rows(n: int, start: int = 0) -> list[dict]:
    """{"text", "label"}: the adjective decides the label."""
    out = []
    for i in range(start, start + n):
        positive = i % 2 == 0
        adj = (GOOD if positive else BAD)[(i // 2) % 6]
        out.append({"text": f"the {NOUNS[i % 5]} number {i} was {adj}", "label": LABELS[int(positive)]})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path.name


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POTSTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def test_a_whole_job_through_the_api_as_a_notebook_runs_it(tmp_path, tiny_lm, tiny_bert):
    config = {  # a plain dict: relative paths are read from the current folder
        "dataset": "toy", "output_root": "out", "task": {"labels": LABELS},
        "corpus": {"unlabeled": {"path": write_jsonl(tmp_path / "u.jsonl",
                                                     [{"text": r["text"]} for r in toy_rows(16, 100)])},
                   "seed": {"path": write_jsonl(tmp_path / "s.jsonl", toy_rows(8))},
                   "test": {"path": write_jsonl(tmp_path / "t.jsonl", toy_rows(10, 200))}},
        "teacher": {"model": tiny_lm, "batch_size": 4},
        "student": {"model": tiny_bert, "encoder": "finetune", "epochs": 2, "batch_size": 8,
                    "max_length": 16, "min_steps": 0, "threads": 1, "export_onnx": False}}

    plan = potstill.plan(config, sample=0)
    assert isinstance(plan, potstill.Plan) and plan.dataset == "toy" and plan.existing_version is None
    assert plan.rows["unique"] == {"seed": 8, "corpus": 16}
    assert (plan.teacher_calls, plan.audit_calls, plan.store_hits) == (16, 8, 8)  # the audit asks first
    assert plan.warnings == ["only 8 valid gold seed rows (< audit.min_seed_rows=10): the teacher "
                             "will be neither tuned nor judged by the quality gate; add gold rows "
                             "to have it checked"]
    assert "plan for toy" in str(plan) and plan.details["teacher"]["calls"] == 16

    result = potstill.run(config)
    assert result.new and result.version == tmp_path / "out" / "toy" / "v1" and result.name == "v1"
    assert (result.read, result.published, result.rejected, result.filtered) == (24, 24, 0, 0)
    assert result.counts["published"] == {"corpus": 16, "seed": 8}
    assert result.teacher_usage["calls"] == plan.teacher_calls and result.labelled_by["teacher"] == "llm"
    assert potstill.run(config).new is False  # unchanged: the same version, nothing ran

    version = potstill.open_version("toy", "v1", root="out")
    assert version.path == result.open().path == result.version and version.labels == LABELS
    df = version.to_pandas()
    assert len(df) == 24 and sorted(df["source"].unique()) == ["corpus", "seed"]
    gold = {r["text"]: r["label"] for r in toy_rows(8)}
    seed = df[df["source"] == "seed"]
    assert dict(zip(seed["text"], seed["label"])) == gold  # gold rows keep their gold label
    assert set(df["label"]) <= set(LABELS) and (df["label_probs"].map(sum) - 1).abs().max() < 1e-5
    assert version.to_arrow("rejected").num_rows == 0 and version.to_arrow().num_rows == 24

    ds = version.to_datasets()
    assert type(ds.features["label"]).__name__ == "ClassLabel" and ds.features["label"].names == LABELS
    assert [LABELS[i] for i in ds["label"]] == df["label"].tolist() and ds["id"] == df["id"].tolist()
    import datasets  # the same rows and features as the Hugging Face loader gives from the card

    loaded = datasets.load_dataset(str(result.version), cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert loaded.features == ds.features and sorted(loaded["id"]) == sorted(ds["id"])
    assert dict(zip(loaded["id"], loaded["label"])) == dict(zip(ds["id"], ds["label"]))

    student = potstill.train(config, dataset=result, out="runs/student")
    assert isinstance(student, potstill.TrainResult) and student.out == Path("runs/student")
    assert student.train_rows == int((df["weight"] > 0).sum()) == 24 and student.n == 10
    assert 0 <= student.accuracy <= 1 and student.gold_only["train_rows"] == 8
    assert json.loads((tmp_path / "runs" / "student" / "metrics.json").read_text()) == student.metrics
    assert (tmp_path / "runs" / "student" / "report.html").is_file()

    again = potstill.evaluate(config, model=student)  # the saved student scores as it was trained
    assert (again.accuracy, again.macro_f1, again.n) == (student.accuracy, student.macro_f1, 10)
    teacher = potstill.evaluate(config, model="teacher", out="runs/teacher.json")
    assert teacher.model == "teacher" and teacher.n == 10
    assert json.loads((tmp_path / "runs" / "teacher.json").read_text()) == teacher.metrics
    # the run paid for the setup search's answers and the first evaluation for the test rows'
    usage = teacher.metrics["teacher_usage"]
    assert usage["audit"]["calls"] == 0 and usage["audit"]["cache_hits"] > 0
    assert usage["test"] == {"calls": 10, "cache_hits": 0}
    twice = potstill.evaluate(config, model="teacher")
    assert twice.metrics["teacher_usage"]["test"] == {"calls": 0, "cache_hits": 10}
    assert (twice.accuracy, twice.macro_f1) == (teacher.accuracy, teacher.macro_f1)

    # overrides as the CLI's --set takes them, as a mapping too; user errors raise, naming the key
    assert potstill.load_config(config, set={"curation.min_confidence": 0.5}).curation.min_confidence == 0.5
    with pytest.raises(ConfigError, match="curation.min_confidnce: unknown key"):
        potstill.plan(config, set=["curation.min_confidnce=0.5"])
    with pytest.raises(FileNotFoundError, match="not a published version folder"):
        potstill.open_version(tmp_path / "out")


def test_a_teacher_evaluation_goes_on_without_a_store_it_cannot_write(tmp_path, tiny_lm, monkeypatch,
                                                                       caplog):
    """`evaluate` only reads the job: a store it cannot write (a read-only output_root) costs
    the answers, with a warning naming the folder, not the evaluation."""
    from potstill.store import StoreError, TeacherStore

    def unwritable(self):
        raise StoreError.unwritable(self.folder, PermissionError(13, "Permission denied"))
    monkeypatch.setattr(TeacherStore, "check_writable", unwritable)
    config = {"dataset": "toy", "output_root": "out", "task": {"labels": LABELS},
              "corpus": {"unlabeled": {"path": write_jsonl(tmp_path / "u.jsonl", [{"text": "x"}])},
                         "seed": {"path": write_jsonl(tmp_path / "s.jsonl", toy_rows(8))},
                         "test": {"path": write_jsonl(tmp_path / "t.jsonl", toy_rows(6, 200))}},
              "teacher": {"model": tiny_lm, "batch_size": 4}}
    with caplog.at_level("WARNING"):
        teacher = potstill.evaluate(config, model="teacher")
    assert teacher.n == 6 and teacher.metrics["teacher_usage"]["test"] == {"calls": 6, "cache_hits": 0}
    assert any("cannot be written" in r.getMessage() and "Evaluating without the store" in r.getMessage()
               for r in caplog.records)
    assert not list((tmp_path / "out").rglob("*.parquet"))  # nothing was kept


def write_labelled_csv(path: Path, n: int) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["review", "sentiment"])
        w.writeheader()
        w.writerows({"review": r["text"], "sentiment": r["label"]} for r in toy_rows(n))


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_init_plan_and_run_from_one_labelled_csv(tmp_path, tiny_lm, capsys, caplog):
    write_labelled_csv(tmp_path / "reviews.csv", 40)
    assert main(["init", "reviews.csv", "--text-column", "review", "--label-column", "sentiment",
                 "--seed-size", "8", "--test-size", "8"]) == 0
    made = last_json(capsys)
    assert made["config"] == "jobs/reviews/config.yaml" and made["labels"] == LABELS
    assert made["rows"] == {"seed": 8, "test": 8, "unlabeled": 24, "unused": 0, "rejected": 0}
    teacher = f"teacher.model={tiny_lm}"

    assert main(["plan", made["config"], "--set", teacher, "--sample", "0"]) == 0
    plan = last_json(capsys)
    assert plan["rows"]["unique"] == {"seed": 8, "corpus": 24} and not any(plan["rows"]["filtered"].values())
    assert len(plan["warnings"]) == 1 and "only 8 valid gold seed rows" in plan["warnings"][0]

    assert main(["run", made["config"], "--set", teacher]) == 0
    version = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert version == tmp_path / "potstill-datasets" / "reviews" / "v1"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["counts"]["published"] == {"corpus": 24, "seed": 8}
    published = set(pq.read_table(version / "data", columns=["text"])["text"].to_pylist())
    test_texts = {json.loads(line)["text"] for line in (tmp_path / "jobs/reviews/test.jsonl").open()}
    assert len(published) == 32 and not published & test_texts  # the test rows stay apart

    # a run whose curation filters every pool row says so (and still publishes the gold rows)
    with caplog.at_level("WARNING"):
        assert main(["run", made["config"], "--set", teacher, "--set", "curation.min_confidence=1.0"]) == 0
    assert "the version holds no pool row: every unlabeled row was rejected or " \
           "filtered (rejected: {}, filtered: {'low_confidence': 24})" in caplog.text


def test_plan_and_run_warn_when_the_pool_is_the_seed_file(tmp_path, tiny_lm, caplog):
    seed = write_jsonl(tmp_path / "s.jsonl", toy_rows(6))
    config = {"dataset": "same", "output_root": "out", "task": {"labels": LABELS},
              "corpus": {"unlabeled": {"path": seed}, "seed": {"path": seed},
                         "test": {"path": write_jsonl(tmp_path / "t.jsonl", [{"text": "so-so", "label": "meh"}])}},
              "teacher": {"model": tiny_lm}}
    with caplog.at_level("WARNING"):
        plan = potstill.plan(config, sample=0)
    same = (f"corpus.unlabeled and corpus.seed read the same file ({tmp_path / 's.jsonl'}): every "
            "pool row read from it is a copy of a gold row and is filtered as a duplicate")
    assert any(w.startswith(same) for w in plan.warnings)
    assert f"corpus.test ({tmp_path / 't.jsonl'}): none of its 1 rows is usable (rejected: " \
        "unknown_label 1): `potstill evaluate`" in "\n".join(plan.warnings)
    assert any("no corpus rows to distil" in w for w in plan.warnings)
    assert all(w in caplog.text for w in plan.warnings)
    result = potstill.run(config)
    assert result.counts["published"] == {"seed": 6}
    assert any(w.startswith(same) for w in result.warnings)
    assert any(w.startswith("the version holds no pool row") for w in result.warnings)
