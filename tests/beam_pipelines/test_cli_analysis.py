"""The analysts' commands through the real `potstill` entry point, on the hand-made fixture
versions (tests/analysis_fixture.py), plus one real pipeline run whose version has a report."""
import json

import pyarrow.parquet as pq
import pytest

import analysis_fixture as fx
from potstill.beam_pipelines.cli import main


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    fx.build(root)
    return root


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_versions_table_and_json(root, capsys):
    code, out, _ = cli(capsys, "versions", "demo", "--root", str(root))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["version", "rows", "created", "parent", "config",
                                              "validation"]
    assert lines[2].split()[:2] == ["v1", "10"] and lines[2].split()[3:] == ["NULL", "a" * 12, "passed"]
    assert lines[3].split()[3:] == ["v1", "b" * 12, "passed"] and lines[-1] == "(2 rows)"
    code, out, _ = cli(capsys, "versions", "demo", "--root", str(root), "--format", "json")
    assert [r["version"] for r in json.loads(out)] == ["v1", "v2"]
    code, out, err = cli(capsys, "versions", "nope", "--root", str(root))
    assert code == 2 and "unknown dataset 'nope'" in err and "datasets there: demo" in err


def test_root_from_env_then_dot_datasets(root, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("POTSTILL_OUTPUT_ROOT", str(root))
    assert cli(capsys, "versions", "demo")[0] == 0
    monkeypatch.delenv("POTSTILL_OUTPUT_ROOT")
    monkeypatch.chdir(tmp_path)
    fx.build(tmp_path / "potstill-datasets")
    code, out, _ = cli(capsys, "query", "demo@v1", "select count(*) as n from data")
    assert code == 0 and out.splitlines()[2].strip() == "10"


def test_diff_table_and_json(root, capsys):
    code, out, _ = cli(capsys, "diff", "demo@v1", "demo@v2", "--root", str(root))
    assert code == 0
    assert "rows: 10 -> 11 (added 2, removed 1, relabelled 1, unchanged 8)" in out
    assert "c3  negative  positive" in out
    assert "curation.max_per_label   (absent)  100" in out
    assert "curation.min_confidence  0.5       0.6" in out
    label_line = next(l for l in out.splitlines() if l.startswith("positive"))
    assert label_line.split()[:4] == ["positive", "5", "7", "2"]
    code, out, _ = cli(capsys, "diff", "demo@v1", "demo@v2", "--root", str(root), "--format", "json")
    assert json.loads(out)["ids"]["added"] == ["c5", "c6"]


def test_query_string_file_and_params(root, capsys):
    code, out, _ = cli(capsys, "query", "demo@v1", "select id from data where source = $s order by id",
                       "--root", str(root), "--param", "s=corpus")
    assert code == 0 and [l.strip() for l in out.splitlines()[2:-1]] == ["c1", "c2", "c3", "c4"]
    code, out, _ = cli(capsys, "query", "demo@v1", "--root", str(root), "--file",
                       "sql/analysis/calibration.sql", "--param", "buckets=2", "--format", "json")
    assert code == 0 and [r["n"] for r in json.loads(out)] == [0, 6]
    code, out, _ = cli(capsys, "query", "demo", "--root", str(root), "--file", "confusion_matrix",
                       "--format", "csv")
    assert out.splitlines()[:2] == ["gold_label,teacher_label,n,share_of_gold",
                                    "negative,negative,2,0.6666666666666666"]


def test_query_views_over_rejected_filtered_and_manifest(root, capsys):
    sql = ("select (select count(*) from rejected) as r, (select count(*) from filtered) as f, "
           "(select version from manifest) as v")
    code, out, _ = cli(capsys, "query", "demo@v2", sql, "--root", str(root), "--format", "json")
    assert json.loads(out) == [{"r": 3, "f": 2, "v": "v2"}]


def test_query_to_files(root, capsys, tmp_path):
    target = tmp_path / "rej.parquet"
    code, out, _ = cli(capsys, "query", "demo@v1", "--root", str(root), "--file", "rejected_reasons",
                       "--format", "parquet", "--out", str(target))
    assert code == 0 and out.strip() == str(target)
    assert pq.read_table(target)["reason"].to_pylist()[:2] == ["empty_text", "unknown_label"]
    target = tmp_path / "t.txt"
    assert cli(capsys, "query", "demo@v1", "select 1 as one", "--root", str(root),
               "--out", str(target))[0] == 0
    assert target.read_text().splitlines()[0] == "one"


@pytest.mark.parametrize("args, message", [
    (["demo@v1", "select 1", "--file", "calibration"], "either a SQL string or --file"),
    (["demo@v1"], "either a SQL string or --file"),
    (["demo@v1", "select 1", "--param", "x=1"], "does not use parameter(s) $x"),
    (["demo@v1", "select $y"], "needs a value for $y"),
    (["demo@v1", "select 1", "--param", "oops"], "NAME=VALUE"),
    (["demo@v9", "select 1"], "has no version v9 (versions: v1, v2)"),
    (["nope", "select 1"], "unknown dataset 'nope'"),
    (["de mo", "select 1"], "invalid dataset name"),
    (["demo@2", "select 1"], "invalid version '2'"),
    (["demo", "selec 1"], "syntax error"),
    (["demo", "--file", "nope.sql"], "query file not found"),
    (["demo", "select 1", "--format", "parquet"], "needs --out"),
])
def test_query_errors_are_one_clear_message(root, capsys, args, message):
    code, out, err = cli(capsys, "query", *args, "--root", str(root))
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_label_issues(root, capsys):
    code, out, _ = cli(capsys, "label-issues", "demo@v1", "--root", str(root), "--format", "json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == ["s3"]
    code, out, _ = cli(capsys, "label-issues", "demo@v1", "--root", str(root), "--all")
    assert out.splitlines()[-1] == "(6 rows)"


def test_report_command_with_student(root, capsys, tmp_path):
    student = tmp_path / "student"
    student.mkdir()
    (student / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "macro_f1": 0.88, "n": 4,
                                                      "train_on": "seed", "train_loss": [0.6]}))
    out_file = tmp_path / "rep" / "report.html"
    code, out, _ = cli(capsys, "report", "demo@v2", "--root", str(root), "--student", str(student),
                       "--out", str(out_file))
    assert code == 0 and out.strip() == str(out_file)
    page = out_file.read_text()
    assert "<h1>demo@v2</h1>" in page and "train_on=seed" in page
    code, _, err = cli(capsys, "report", "demo@v2", "--root", str(root))
    assert code == 2 and "needs --out" in err


def test_a_real_run_publishes_its_report(tmp_path, tiny_lm, capsys):
    """The job's finish() passes the report hook to publish: a pipeline-made version has one."""
    from apache_beam.testing.test_pipeline import TestPipeline
    from potstill.beam_pipelines.pipeline import run
    from potstill.config.core import parse_config

    rows = [{"text": t} for t in ("a good film", "a bad film", "great acting", "dull plot")]
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seed = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seed))
    cfg = parse_config({
        "dataset": "toy", "output_root": str(tmp_path / "out"),
        "task": {"labels": ["negative", "positive"]},
        "corpus": {"unlabeled": {"path": str(tmp_path / "u.jsonl")},
                   "seed": {"path": str(tmp_path / "s.jsonl"), "label_field": "label"}},
        "teacher": {"model": tiny_lm, "batch_size": 2}})
    version = run(cfg, test_pipeline=TestPipeline())
    page = (version / "report.html").read_text()
    assert "<h1>toy@v1</h1>" in page and 'class="section-error"' not in page
    assert (version / "validation.json").is_file()
    code, out, _ = cli(capsys, "versions", "toy", "--root", str(tmp_path / "out"))
    assert code == 0 and out.splitlines()[2].split()[:2] == ["v1", "6"]


OUT_COMMANDS = {
    "versions": ["versions", "demo"],
    "diff": ["diff", "demo@v1", "demo@v2"],
    "query": ["query", "demo@v1", "select 1 as x", "--format", "csv"],
    "label-issues": ["label-issues", "demo@v1"],
    "report": ["report", "demo@v1"],
}


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
@pytest.mark.parametrize("where", ["demo/v3", "demo/v3/x.csv", "demo/notes.csv", "other", ".potstill-store/x"])
def test_out_inside_the_output_root_is_refused(root, capsys, command, where):
    """A result file named like the next version (OUT/demo/v3) would block every later publish:
    no analyst command writes anywhere under the output root."""
    target = root / where
    code, out, err = cli(capsys, *OUT_COMMANDS[command], "--root", str(root), "--out", str(target))
    assert code == 2 and out == "" and "Traceback" not in err
    assert "refused" in err and str(target) in err and "inside the output root" in err
    assert not target.exists() and not (root / where.split("/")[0]).is_file()
    assert sorted(p.name for p in (root / "demo").iterdir() if p.name.startswith("v")) == ["v1", "v2"]


def test_out_inside_the_dataset_folder_of_a_version_given_by_path_is_refused(root, capsys, tmp_path):
    target = root / "demo" / "v3"
    code, _, err = cli(capsys, "query", str(root / "demo" / "v1"), "select 1 as x",
                       "--root", str(tmp_path), "--out", str(target))
    assert code == 2 and "inside the dataset folder" in err and str(target) in err
    assert not target.exists()


def test_export_into_the_output_root_is_refused(root, capsys):
    target = root / "demo" / "v3"
    code, _, err = cli(capsys, "export", "demo@v1", "--to", "hf", str(target), "--root", str(root))
    assert code == 2 and "refused: DIR" in err and str(target) in err and not target.exists()


def test_out_beside_the_output_root_is_fine(root, capsys, tmp_path):
    target = tmp_path / "demo-v1.csv"
    code, out, _ = cli(capsys, *OUT_COMMANDS["query"], "--root", str(root), "--out", str(target))
    assert code == 0 and out.strip() == str(target) and target.read_text() == "x\n1\n"
