"""potstill.reports.analysis and sql/analysis/ on a hand-made version whose answers are known (see
tests/analysis_fixture.py for the rows)."""
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analysis_fixture as fx
from potstill.models.metrics import expected_calibration_error
from potstill.reports import analysis, tables
from potstill.publish import contract
from potstill.reports.analysis import AnalysisError
from potstill.publish.versions import VersionError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("versions")
    v1, v2 = fx.build(root)
    return root, v1, v2


@pytest.fixture(scope="module")
def v1(built):
    return built[1]


def run(version, name, **params):
    return analysis.run_file(version, name, **params).to_pylist()


def by(rows, *keys):
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in rows}


@pytest.mark.parametrize("path", sorted(analysis.analysis_dir().glob("*.sql")), ids=lambda p: p.stem)
def test_every_analysis_query_is_documented_staged_and_runs(path, v1):
    sql = path.read_text()
    assert sql.startswith(f"-- {path.name}: "), "header comment naming the file"
    assert "-- Output:" in sql and ("-- Parameters" in sql or "@param" in sql)
    assert sql.rstrip().endswith("select * from final")
    for name in analysis.bind(sql):  # every parameter used has a documented default
        assert f"@param ${name} =" in sql
    analysis.run_query(v1, sql)


def test_disagreement_per_gold_label_and_total(v1):
    rows = run(v1, "teacher_gold_disagreement")
    assert [r["gold_label"] for r in rows] == ["negative", "positive", "(all)"]
    total = rows[-1]
    assert (total["n"], total["disagreements"]) == (6, 2)
    assert total["disagreement_rate"] == pytest.approx(1 / 3)
    assert total["mean_confidence_when_wrong"] == pytest.approx((0.88 + 0.56) / 2, abs=1e-6)
    assert rows[0]["mean_confidence_when_wrong"] == pytest.approx(0.56, abs=1e-6)


def test_confusion_matrix_is_complete_in_label_order(v1):
    rows = run(v1, "confusion_matrix")
    assert [(r["gold_label"], r["teacher_label"], r["n"]) for r in rows] == [
        ("negative", "negative", 2), ("negative", "positive", 1),
        ("positive", "negative", 1), ("positive", "positive", 2)]
    assert rows[0]["share_of_gold"] == pytest.approx(2 / 3)


def test_calibration_table_and_ece_match_the_metrics_module(v1):
    rows = run(v1, "calibration")
    assert [r["n"] for r in rows] == [0, 0, 0, 0, 0, 1, 1, 1, 2, 1]
    assert rows[8]["accuracy"] == 0.5 and rows[8]["mean_confidence"] == pytest.approx(0.86, abs=1e-6)
    assert rows[0]["accuracy"] is None and rows[0]["lower"] == 0 and rows[9]["upper"] == 1
    assert [r["ece"] for r in rows] == [pytest.approx(1.93 / 6, abs=1e-6)] * 10
    seed = [r for r in pq.read_table(v1 / "data").to_pylist() if r["source"] == "seed"]
    probs = np.array([r["label_probs"] for r in seed], dtype=np.float64)
    gold = np.array([fx.LABELS.index(r["gold_label"]) for r in seed])
    assert rows[0]["ece"] == pytest.approx(expected_calibration_error(probs, gold, 10), abs=1e-9)


def test_calibration_bucket_count_is_a_bound_parameter(v1):
    rows = run(v1, "calibration", buckets=2)
    assert [r["n"] for r in rows] == [0, 6]
    assert rows[1]["accuracy"] == pytest.approx(4 / 6)
    assert rows[1]["ece"] == pytest.approx(0.105, abs=1e-6)
    with pytest.raises(Exception, match="buckets must be an integer >= 1"):
        run(v1, "calibration", buckets=0)


def test_confidence_quantiles_per_class_and_by_source(v1):
    rows = by(run(v1, "confidence_by_class"), "teacher_label")
    assert rows["positive"]["n"] == 5 and rows["negative"]["n"] == 5
    assert rows["positive"]["min"] == pytest.approx(0.52, abs=1e-6)
    assert rows["positive"]["median"] == pytest.approx(0.84, abs=1e-6)
    assert rows["negative"]["max"] == pytest.approx(0.88, abs=1e-6)
    assert rows["negative"]["p25"] == pytest.approx(0.70, abs=1e-6)
    seed = by(run(v1, "confidence_by_class", source="seed"), "teacher_label")
    assert seed["positive"]["n"] == 3 and seed["positive"]["median"] == pytest.approx(0.84, abs=1e-6)


def test_label_error_candidates_and_their_thresholds(v1):
    rows = run(v1, "label_error_candidates")
    assert [(r["reason"], r["id"]) for r in rows] == [
        ("confident_disagreement", "s3"), ("low_margin", "c2"), ("low_margin", "s6")]
    rows = run(v1, "label_error_candidates", min_confidence=0.9, max_margin=0.05)
    assert [(r["reason"], r["id"]) for r in rows] == [("low_margin", "c2")]


def test_rejected_and_filtered_reasons_by_count(v1):
    rows = run(v1, "rejected_reasons")
    assert [(r["stage"], r["reason"], r["n"]) for r in rows] == [
        ("rejected", "empty_text", 2), ("rejected", "unknown_label", 1),
        ("filtered", "duplicate", 1), ("filtered", "low_confidence", 1)]
    assert rows[0]["share_of_stage"] == pytest.approx(2 / 3)
    assert rows[0]["example"] == "u.jsonl:3" and rows[1]["sources"] == "seed"


def test_generated_agreement_is_empty_without_generated_rows(v1):
    assert run(v1, "generated_agreement") == []


def _con_with_generated(intended: bool):
    data = fx.published(fx.CORPUS_V1).to_pylist()
    for i, (teacher, conf, goal) in enumerate([("positive", 0.9, "positive"),
                                               ("negative", 0.7, "positive"),
                                               ("negative", 0.8, "negative")]):
        data.append({**fx.row(f"g{i}", teacher, conf, source="generated"),
                     **({"intended_label": goal} if intended else {})})
    schema = contract.PUBLISHED_SCHEMA
    if intended:  # the generation stage's optional column, not (yet) in the contract here
        schema = schema.append(pa.field("intended_label", pa.string()))
    table = pa.Table.from_pylist(data, schema=schema)
    return analysis.open_tables(data=table, filtered=fx.filtered(), rejected=fx.rejected(),
                                manifest={"labels": fx.LABELS})


def test_generated_agreement_with_an_intended_label_column():
    con = _con_with_generated(intended=True)
    rows = analysis.execute(con, analysis.load_sql("generated_agreement")[1]).to_pylist()
    assert [(r["label"], r["generated_n"], r["generated_agree"]) for r in rows] == [
        ("negative", 1, 1), ("positive", 2, 1)]
    # corpus rows: c3, c4 and the filtered f1 are negative; c1, c2 positive
    assert rows[0]["corpus_n"] == 3 and rows[1]["corpus_n"] == 2
    assert rows[1]["agreement_rate"] == 0.5
    assert rows[1]["generated_mean_confidence"] == pytest.approx(0.8)
    con = _con_with_generated(intended=False)
    assert analysis.execute(con, analysis.load_sql("generated_agreement")[1]).num_rows == 0


def test_manifest_view_types(v1):
    row = analysis.run_query(v1, """
        select version, labels, counts->>'$.totals.read' as read,
               cast(teacher_audit->'$.n' as integer) as n, parent_version,
               json_type(config) as config_type
        from manifest""").to_pylist()
    assert row == [{"version": "v1", "labels": fx.LABELS, "read": "15", "n": 6,
                    "parent_version": None, "config_type": "OBJECT"}]


def test_parameters_defaults_overrides_and_errors(v1):
    sql = "-- @param $k = 2\n-- @param $unused = \"x\"\nselect $k as k, $name as name"
    assert analysis.declared_defaults(sql) == {"k": 2, "unused": "x"}
    assert analysis.bind(sql, {"name": "a"}) == {"k": 2, "name": "a"}
    with pytest.raises(AnalysisError, match=r"\$name \(--param name=VALUE\)"):
        analysis.bind(sql)
    with pytest.raises(AnalysisError, match=r"does not use parameter\(s\) \$other"):
        analysis.bind(sql, {"name": "a", "other": 1})
    assert analysis.parse_params(["a=5", "b=0.5", "c=corpus", "d=null", 'e="5"', "f=x=y"]) == {
        "a": 5, "b": 0.5, "c": "corpus", "d": None, "e": "5", "f": "x=y"}
    with pytest.raises(AnalysisError, match="NAME=VALUE"):
        analysis.parse_params(["novalue"])
    # a value is bound, never spliced into the SQL: a quote in it is just data
    out = analysis.run_query(v1, "select count(*) as n from data where source = $s",
                             {"s": "seed' or '1'='1"}).to_pylist()
    assert out == [{"n": 0}]


def test_load_sql_by_path_or_name(tmp_path):
    assert analysis.load_sql("calibration")[0].name == "calibration.sql"
    assert analysis.load_sql("calibration.sql")[0] == analysis.load_sql("calibration")[0]
    f = tmp_path / "mine.sql"
    f.write_text("select 1")
    assert analysis.load_sql(str(f))[1] == "select 1"
    with pytest.raises(AnalysisError, match="calibration"):
        analysis.load_sql("nope")


def test_versions_table(built):
    root, _, _ = built
    rows = analysis.versions_table(root, "demo").to_pylist()
    assert [(r["version"], r["rows"], r["parent"], r["config"], r["validation"]) for r in rows] == [
        ("v1", 10, None, "a" * 12, "passed"), ("v2", 11, "v1", "b" * 12, "passed")]


def test_diff_rows_labels_and_config(built):
    root, v1, v2 = built
    d = analysis.diff(v1, v2)
    assert d["rows"] == {"added": 2, "removed": 1, "relabelled": 1, "unchanged": 8}
    assert d["ids"] == {"added": ["c5", "c6"], "removed": ["c4"],
                        "relabelled": [{"id": "c3", "old": "negative", "new": "positive"}]}
    assert [(l["label"], l["a"], l["b"], l["delta"]) for l in d["labels"]] == [
        ("negative", 5, 4, -1), ("positive", 5, 7, 2)]
    assert d["config"] == [
        {"key": "curation.max_per_label", "old": None, "new": 100, "change": "added"},
        {"key": "curation.min_confidence", "old": 0.5, "new": 0.6, "change": "changed"}]
    assert (d["a"]["ref"], d["b"]["ref"]) == ("demo@v1", "demo@v2")


def test_config_diff_flattens_nested_keys():
    old = {"a": {"b": 1, "c": [1, 2]}, "gone": {"x": True}}
    new = {"a": {"b": 1, "c": [1, 3]}, "new": None}
    assert [(c["key"], c["change"]) for c in analysis.config_diff(old, new)] == [
        ("a.c", "changed"), ("gone.x", "removed"), ("new", "added")]


def test_locate_refs_and_paths(built, monkeypatch):
    root, v1, v2 = built
    assert analysis.locate(root, "demo") == v2
    assert analysis.locate(root, "demo@v1") == v1
    assert analysis.locate(None, str(v1)) == v1
    monkeypatch.setenv(analysis.ROOT_ENV, str(root))
    assert analysis.locate(None, "demo@v2") == v2
    with pytest.raises(VersionError, match="invalid dataset name"):
        analysis.locate(root, "de mo")
    with pytest.raises(VersionError, match="no version v7"):
        analysis.locate(root, "demo@v7")
    with pytest.raises(AnalysisError, match="not a published version"):
        analysis.locate(root, str(root))


def test_label_issues_flag_the_confidently_contradicted_seed_row(v1):
    issues = analysis.label_issues(v1).to_pylist()
    assert [r["id"] for r in issues] == ["s3"]
    assert issues[0]["label_quality"] == pytest.approx(0.12, abs=1e-6)
    everything = analysis.label_issues(v1, all_rows=True).to_pylist()
    assert [r["id"] for r in everything] == ["s3", "s6", "s5", "s4", "s2", "s1"]
    assert sum(r["is_label_issue"] for r in everything) == 1


def test_tables_text_csv_json_parquet(tmp_path):
    t = pa.table({"name": ["a", None, "x" * 100], "n": [1, 22, 333],
                  "p": [0.123456, 1e-7, math.nan], "l": [[0.25, 0.75], [], None]})
    text = tables.format_table(t, max_width=12)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "n", "p", "l"]
    assert lines[2].startswith("a     ") and "0.1235" in lines[2] and "[0.25, 0.75]" in lines[2]
    assert "NULL" in lines[3] and "1e-07" in lines[3] and "xxxxxxxxxxx…" in lines[4]
    assert lines[-1] == "(3 rows)"
    assert lines[1].split() == ["-" * 12, "-" * 3, "-" * 6, "-" * 12]
    assert lines[0].index(" n ") + 2 == len("-" * 12 + "  " + "-" * 3)  # numbers right-aligned
    assert tables.to_csv(t).splitlines()[1] == 'a,1,0.123456,"[0.25, 0.75]"'
    assert json.loads(tables.write(t.slice(0, 1), "json")) == [
        {"name": "a", "n": 1, "p": 0.123456, "l": [0.25, 0.75]}]
    tables.write(t, "parquet", tmp_path / "t.parquet")
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.column_names == t.column_names and back["l"].to_pylist() == t["l"].to_pylist()
    with pytest.raises(ValueError, match="needs --out"):
        tables.write(t, "parquet")
