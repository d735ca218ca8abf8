import json
from pathlib import Path

import pytest

from potstill.beam_pipelines.cli import main


def write_config(tmp_path, tiny_lm, **extra) -> Path:
    (tmp_path / "u.jsonl").write_text('{"text": "a fine film"}\n{"text": "a dull film"}\n')
    cfg = {"dataset": "toy", "output_root": "out", "task": {"labels": ["negative", "positive"]},
           "corpus": {"unlabeled": {"path": "u.jsonl"}}, "teacher": {"model": tiny_lm}, **extra}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def test_unknown_key_exits_2_naming_it(tmp_path, tiny_lm, capsys):
    path = write_config(tmp_path, tiny_lm, curation={"min_confidnce": 0.5})
    assert main(["run", str(path)]) == 2
    assert "curation.min_confidnce: unknown key" in capsys.readouterr().err


def test_missing_input_exits_2_naming_the_pattern(tmp_path, tiny_lm, capsys):
    path = write_config(tmp_path, tiny_lm)
    assert main(["run", str(path), "--set", "corpus.unlabeled.path=nope/*.jsonl"]) == 2
    assert "nope/*.jsonl" in capsys.readouterr().err


def test_failed_validation_publishes_nothing(tmp_path, tiny_lm, capsys):
    path = write_config(tmp_path, tiny_lm, validation={"min_rows": 100})
    assert main(["run", str(path)]) == 3
    err = capsys.readouterr().err
    assert "nothing was published" in err and "expect_table_row_count_to_be_between" in err
    assert not list((tmp_path / "out" / "toy").glob("v*"))
    # in plain words, what was expected and what was found; GE's name stays in the details
    assert "  - row count: a version should publish at least 100 rows; found 2\n" in err
    assert "(GE: expect_table_row_count_to_be_between" in err


def test_run_prints_the_version_dir_last(tmp_path, tiny_lm, capsys):
    path = write_config(tmp_path, tiny_lm)
    assert main(["run", str(path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == str(tmp_path / "out" / "toy" / "v1")
    assert (Path(last) / "manifest.json").exists()
    # the job's files carry the label order of label_probs, the manifest's
    import pyarrow.parquet as pq

    labels = json.loads((Path(last) / "manifest.json").read_text())["labels"]
    for name in ("data/part-0.parquet", "filtered.parquet"):
        field = pq.read_schema(Path(last) / name).field("label_probs")
        assert json.loads(field.metadata[b"labels"]) == labels == ["negative", "positive"], name


def test_a_curation_setting_the_query_never_reads_exits_2_naming_it(tmp_path, tiny_lm, capsys):
    # sql/select.sql has no $max_per_label: the cap would silently do nothing
    path = write_config(tmp_path, tiny_lm, curation={"query": "select.sql", "max_per_label": 5})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "curation.max_per_label" in err and "select.sql" in err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_bug_exits_1_with_a_traceback_that_says_so(tmp_path, tiny_lm, capsys, monkeypatch):
    from potstill import job

    def broken(*args, **kwargs):
        raise RuntimeError("an internal invariant broke")
    monkeypatch.setattr(job, "finish", broken)
    assert main(["run", str(write_config(tmp_path, tiny_lm))]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "an internal invariant broke" in err and "this is a bug" in err


def test_run_ends_with_a_summary_of_the_stage_counters(tmp_path, tiny_lm, caplog):
    with caplog.at_level("INFO", logger="potstill.beam_pipelines.pipeline"):
        assert main(["run", str(write_config(tmp_path, tiny_lm))]) == 0
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage counters:")]
    assert len(summary) == 1 and "read_corpus=2" in summary[0]
    teacher = [r.getMessage() for r in caplog.records if "from the store (calls saved)" in r.getMessage()]
    assert teacher == ["teacher: 2 rows answered, 0 from the store (calls saved), 2 model calls, 0 retries"]


def test_a_stray_file_named_like_the_next_version_does_not_stop_publishing(tmp_path, tiny_lm, capsys,
                                                                          caplog):
    """A file OUT/toy/v2 (an old `potstill query --out OUT/toy/v2`) used to make every later
    run exit 1 after all its work; now the run publishes v3 and its log names the file."""
    path = write_config(tmp_path, tiny_lm)
    assert main(["run", str(path)]) == 0
    stray = tmp_path / "out" / "toy" / "v2"
    stray.write_text("x\n1\n")
    assert main(["run", str(path), "--set", "curation.min_confidence=0.01"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "out" / "toy" / "v3")
    assert f"{stray} is not a version (a file)" in caplog.text
    assert json.loads((tmp_path / "out" / "toy" / "v3" / "manifest.json").read_text())[
        "parent_version"] == "v1"


@pytest.mark.parametrize("blocked", ["out", "out/toy", "out/toy/.staging"])
def test_an_output_root_a_run_cannot_write_exits_2_before_any_model_loads(tmp_path, tiny_lm, capsys,
                                                                          monkeypatch, blocked):
    """A file where output_root, the dataset folder or its staging folder should be (unwritable
    for root too): exit 2 naming output_root and the path, not a bare errno after the audit."""
    from potstill.models.teacher.teacher_setup import TeacherSetup

    path = write_config(tmp_path, tiny_lm)
    (tmp_path / blocked).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / blocked).write_text("not a folder")
    monkeypatch.setattr(TeacherSetup, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"output_root {tmp_path / 'out'}: {tmp_path / blocked} is a file, not a folder" in err
    assert "Traceback" not in err and (tmp_path / blocked).is_file()
