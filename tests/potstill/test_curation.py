"""sql/curate.sql through potstill.publish.curation, on a few crafted staged rows."""
import math
from collections import Counter

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potstill.publish import contract
from potstill.config.core import ConfigError, Curation
from potstill.publish.curation import curate, load_query, query_parameters

LABELS = ["neg", "pos"]


def make_row(id, label="pos", conf=0.9, source="corpus", **over):
    """A valid SCORED_SCHEMA row for LABELS; `over` replaces any field."""
    p = [1 - conf, conf] if label == "pos" else [conf, 1 - conf]
    row = {"id": id, "text": f"text {id}", "label": label, "label_probs": p,
           "teacher_label": label, "teacher_confidence": conf,
           "teacher_entropy": -sum(x * math.log(x) for x in p if x > 0),
           "teacher_margin": abs(p[1] - p[0]),
           "gold_label": label if source == "seed" else None, "source": source, "weight": 1.0}
    return {**row, **over}


def staged(*rows):
    return pa.Table.from_pylist(list(rows), schema=contract.SCORED_SCHEMA)


def reasons(result):
    return dict(zip(result.filtered["id"].to_pylist(), result.filtered["filter_reason"].to_pylist()))


def test_low_confidence_corpus_row_is_filtered_with_reason_and_seed_row_kept():
    table = staged(make_row("a", conf=0.9), make_row("b", conf=0.55),
                   make_row("c", conf=0.55, source="seed"), make_row("d", conf=0.6, source="generated"))
    result = curate(table, LABELS, Curation(min_confidence=0.7))
    assert result.published["id"].to_pylist() == ["a", "c"]
    assert reasons(result) == {"b": "low_confidence", "d": "low_confidence"}
    assert result.published.schema == contract.PUBLISHED_SCHEMA
    assert result.filtered.schema == contract.FILTERED_SCHEMA
    assert Counter(result.filtered["filter_reason"].to_pylist()) == {"low_confidence": 2}
    assert result.params == {"min_confidence": 0.7, "max_per_label": None}


def test_threshold_compares_in_float32():
    # 0.7 stored as float32 is 0.69999999; it must not count as below a 0.7 threshold.
    result = curate(staged(make_row("a", conf=0.7)), LABELS, Curation(min_confidence=0.7))
    assert result.published.num_rows == 1


def test_label_cap_keeps_top_k_by_confidence_then_id_and_ignores_seeds():
    table = staged(make_row("p1", conf=0.8), make_row("p2", conf=0.95), make_row("p3", conf=0.9),
                   make_row("p4", conf=0.9), make_row("s1", conf=0.6, source="seed"),
                   make_row("n1", "neg", conf=0.7), make_row("n2", "neg", conf=0.3))
    result = curate(table, LABELS, Curation(min_confidence=0.5, max_per_label=2))
    # pos: p2 (0.95) then p3 (0.9, id before p4); the seed row uses no place in the cap.
    assert result.published["id"].to_pylist() == ["n1", "p2", "p3", "s1"]
    assert reasons(result) == {"n2": "low_confidence", "p1": "label_cap", "p4": "label_cap"}


def test_null_cap_keeps_all_and_counts_reconcile():
    rows = [make_row(f"r{i:02d}", LABELS[i % 2], conf=0.5 + i / 40) for i in range(20)]
    result = curate(staged(*reversed(rows)), LABELS, Curation(min_confidence=0.6, max_per_label=None))
    assert result.published.num_rows + result.filtered.num_rows == 20
    assert set(reasons(result).values()) == {"low_confidence"}
    assert result.published["id"].to_pylist() == sorted(result.published["id"].to_pylist())


def test_reads_staged_parquet_paths(tmp_path):
    paths = []
    for i, rows in enumerate([[make_row("a"), make_row("b", conf=0.2)], [make_row("c")]]):
        paths.append(str(tmp_path / f"shard-{i}.parquet"))
        pq.write_table(staged(*rows), paths[-1])
    result = curate(paths, LABELS, {"min_confidence": 0.5})
    assert result.published["id"].to_pylist() == ["a", "c"]
    assert reasons(result) == {"b": "low_confidence"}
    assert result.query_path.endswith("sql/curate.sql")


def test_no_shards_gives_empty_tables():
    result = curate([], LABELS, Curation())
    assert result.published.num_rows == 0 and result.filtered.num_rows == 0


def test_query_missing_a_contract_column_is_an_error_naming_it(tmp_path):
    query = tmp_path / "bad.sql"
    query.write_text("with final as (select * exclude (teacher_margin), null as filter_reason "
                     "from staged) select * from final")
    with pytest.raises(ValueError, match="missing columns: teacher_margin"):
        curate(staged(make_row("a")), LABELS, Curation(query=str(query)))


def test_query_that_drops_rows_is_an_error(tmp_path):
    query = tmp_path / "drops.sql"
    query.write_text("select *, null as filter_reason from staged where teacher_confidence > 0.5")
    with pytest.raises(ValueError, match="returned 1 rows for 2 staged rows"):
        curate(staged(make_row("a"), make_row("b", conf=0.3)), LABELS, Curation(query=str(query)))


def test_load_query_validation(tmp_path):
    path, text = load_query("curate.sql")
    assert path.name == "curate.sql" and text.rstrip().endswith("select * from final")
    with pytest.raises(ValueError, match="not found.*curate.sql"):
        load_query("nope.sql")
    with pytest.raises(ValueError, match=".sql file"):
        load_query("../potstill/config.py")
    (tmp_path / "q.txt").write_text("select 1")
    with pytest.raises(ValueError, match=".sql file"):
        load_query(str(tmp_path / "q.txt"))


def test_query_parameters_ignore_comments_and_strings():
    _, text = load_query("curate.sql")
    assert query_parameters(text) == ["min_confidence", "max_per_label"]
    assert query_parameters("-- $a\nselect '$b', $c /* $d */") == ["c"]


def test_unknown_parameter_is_an_error(tmp_path):
    query = tmp_path / "p.sql"
    query.write_text("select *, null as filter_reason from staged where weight > $min_weight")
    with pytest.raises(ValueError, match=r"unknown parameters: \$min_weight"):
        curate(staged(make_row("a")), LABELS, Curation(query=str(query)))


INJECTION = "0; drop table staged; select 0"


def test_injection_in_config_is_rejected_by_validation():
    with pytest.raises(ConfigError, match="curation.min_confidence"):
        curate(staged(make_row("a")), LABELS, {"min_confidence": INJECTION})
    # model_construct() skips validation; curate validates again.
    with pytest.raises(ConfigError, match="curation.min_confidence"):
        curate(staged(make_row("a")), LABELS, Curation.model_construct(
            query="curate.sql", min_confidence=INJECTION, max_per_label=None))


def test_parameters_are_bound_not_executed():
    # Even bypassing curate(), the query binds values: a string is a value that fails to cast.
    _, sql = load_query("curate.sql")
    con = duckdb.connect()
    con.register("staged", staged(make_row("a")))
    with pytest.raises(duckdb.ConversionException):
        con.sql(sql, params={"min_confidence": INJECTION, "max_per_label": None}).to_arrow_table()
    assert con.sql("select count(*) from staged").fetchall() == [(1,)]
    con.close()


FORGED = {
    "rewrites a text": ("select * replace (case when id = 'b' then 'forged' else text end as text), "
                        "cast(null as varchar) as filter_reason from staged", "changed column 'text' of row b"),
    "sets label against the teacher": ("select * replace (case when id = 'b' then 'neg' else label end as label), "
                                       "cast(null as varchar) as filter_reason from staged",
                                       "set label 'neg' on row b"),
    "edits the teacher's distribution": ("select * replace ([0.0, 1.0]::float[] as label_probs), "
                                         "cast(null as varchar) as filter_reason from staged",
                                         "changed column 'label_probs' of row a"),
    "drops a gold row": ("select *, case when source = 'seed' then 'low_confidence' end as filter_reason "
                         "from staged", "filtered gold seed row s"),
    "invents a job's reason": ("select *, case when id = 'b' then 'duplicate' end as filter_reason "
                               "from staged", "filter_reason 'duplicate'"),
    "swaps a row for another": ("select * replace (case when id = 'b' then 'zz' else id end as id), "
                                "cast(null as varchar) as filter_reason from staged",
                                "returned row zz, which is not a staged row"),
    "gives a negative weight": ("select * replace (case when id = 'b' then -1.0 else weight end as weight), "
                                "cast(null as varchar) as filter_reason from staged", "weight -1.0"),
}


@pytest.mark.parametrize("what", sorted(FORGED))
def test_a_curation_query_that_forges_data_is_refused_naming_row_and_column(tmp_path, what):
    sql, message = FORGED[what]
    (tmp_path / "forged.sql").write_text(sql)
    table = staged(make_row("a"), make_row("b"), make_row("s", source="seed"))
    with pytest.raises(ValueError, match="forged.sql") as err:
        curate(table, LABELS, Curation(query=str(tmp_path / "forged.sql")))
    assert message in str(err.value)


def test_custom_reasons_and_weights_are_a_query_s_to_decide(tmp_path):
    (tmp_path / "mine.sql").write_text(
        "select * replace (case when id = 'a' then 0.5 else weight end as weight), "
        "case when id = 'b' then 'custom_too_short' end as filter_reason from staged")
    table = staged(make_row("a"), make_row("b"), make_row("s", source="seed"))
    result = curate(table, LABELS, Curation(query=str(tmp_path / "mine.sql")))
    assert reasons(result) == {"b": "custom_too_short"}
    assert dict(zip(result.published["id"].to_pylist(), result.published["weight"].to_pylist()))["a"] == 0.5
