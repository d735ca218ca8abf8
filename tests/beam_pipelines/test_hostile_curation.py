"""Hostile curation SQL in a run: the user's curation query is one SELECT over the staged rows
and reads nothing else. A writing statement is refused before any model loads; a SELECT that
reads a file outside the staged rows is refused by DuckDB's own settings (external access off
except the staging folder, configuration locked), nothing is published, and the teacher's
answers stay in the store, so the rerun with a fixed query costs no teacher call."""
import json

import yaml

from potstill.beam_pipelines.cli import main
from test_pipeline import config  # noqa: F401 - the fixture: a tiny teacher, hostile rows


def _write(tmp_path, cfg, sql: str):
    query = tmp_path / "mine.sql"
    query.write_text(sql)
    data = cfg.model_dump(mode="json", exclude_unset=True)
    data["curation"] = {"query": str(query)}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _store_segments(tmp_path):
    return sorted((tmp_path / "out" / ".potstill-store").rglob("*.parquet"))


def test_a_writing_curation_statement_stops_the_job_before_any_model(config, tmp_path, capsys):  # noqa: F811
    target = tmp_path / "leak.csv"
    cfg_file = _write(tmp_path, config, f"copy (select * from staged) to '{target}'")
    assert main(["run", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "COPY" in err and "mine.sql" in err and "Traceback" not in err
    assert not target.exists() and not _store_segments(tmp_path)  # the teacher never ran


def test_a_curation_select_reading_other_files_is_refused_and_teacher_work_kept(config, tmp_path, capsys):  # noqa: F811
    secret = tmp_path / "secret.csv"
    secret.write_text("token\nhunter2\n")
    cfg_file = _write(tmp_path, config, "select s.*, cast(null as varchar) as filter_reason "
                      f"from staged s, read_csv('{secret}') as x")
    assert main(["run", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert "reads outside the staged rows" in err and "hunter2" not in err
    assert not (tmp_path / "out" / "toy" / "v1").exists()
    assert _store_segments(tmp_path)  # the teacher's answers were stored before curation

    fixed = _write(tmp_path, config, "select *, cast(null as varchar) as filter_reason from staged")
    assert main(["run", str(fixed)]) == 0
    manifest = json.loads((tmp_path / "out" / "toy" / "v1" / "manifest.json").read_text())
    assert manifest["teacher_usage"]["calls"] == 0 and manifest["teacher_usage"]["cache_hits"] > 0


def test_a_curation_query_that_forges_labels_publishes_nothing(config, tmp_path, capsys):  # noqa: F811
    forged = _write(tmp_path, config, "select * replace ('positive' as label), "
                    "cast(null as varchar) as filter_reason from staged")
    assert main(["run", str(forged)]) == 2
    err = capsys.readouterr().err
    assert "mine.sql set label 'positive' on row" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "toy" / "v1").exists() and _store_segments(tmp_path)
