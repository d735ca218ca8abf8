"""The great-expectations gate on small published tables: one good, each bad in one way."""
import json
import math
import re
import time

import pyarrow as pa
import pytest

from potstill.publish import contract
from potstill.publish.expectations import (HELPER_COLUMNS, ValidationFailed, build_suite, validate,
                                   validation_frame)

LABELS = ["neg", "pos", "plot"]


def make_row(id, label="pos", conf=0.8, source="corpus", **over):
    """A valid PUBLISHED_SCHEMA row for LABELS; `over` replaces any field."""
    rest = (1 - conf) / (len(LABELS) - 1)
    p = [conf if l == label else rest for l in LABELS]
    row = {"id": id, "text": f"text {id}", "label": label, "label_probs": p,
           "teacher_label": label, "teacher_confidence": conf,
           "teacher_entropy": -sum(x * math.log(x) for x in p if x > 0), "teacher_margin": conf - rest,
           "gold_label": label if source == "seed" else None, "source": source, "weight": 1.0}
    return {**row, **over}


def table(*rows):
    return pa.Table.from_pylist(list(rows), schema=contract.PUBLISHED_SCHEMA)


def good_rows(n=4):
    return [make_row(f"r{i}", LABELS[i % 3], source=contract.SOURCES[i % 3]) for i in range(n)]


def only_failure(report, expectation, column):
    assert not report.success
    hits = [f for f in report.failures if f["expectation"] == expectation and f["column"] == column]
    assert hits, report.failures
    return hits[0]


def test_suite_is_derived_from_the_contract():
    suite = build_suite(LABELS, min_rows=1)
    not_null = {e.column for e in suite if type(e).__name__ == "ExpectColumnValuesToNotBeNull"}
    assert not_null == {f.name for f in contract.PUBLISHED_SCHEMA if not f.nullable}
    ordered = next(e for e in suite if type(e).__name__ == "ExpectTableColumnsToMatchOrderedList")
    assert ordered.column_list == contract.column_names(contract.PUBLISHED_SCHEMA) + list(HELPER_COLUMNS)


def test_good_table_passes_and_results_are_json():
    report = validate(table(*good_rows()), LABELS, min_rows=4)
    assert report.success, report.failures
    assert report.failures == []
    json.dumps(report.results)
    assert {r["expectation"] for r in report.results} >= {"expect_column_values_to_be_unique"}


def test_helper_columns():
    rows = good_rows(2) + [make_row("x", label_probs=None), make_row("y", label_probs=[0.5, None, 0.5])]
    df = validation_frame(pa.Table.from_pylist(rows, schema=contract.PUBLISHED_SCHEMA))
    assert df["_probs_len"].tolist() == [3, 3, 0, 2]
    assert df["_probs_sum"].iloc[0] == pytest.approx(1.0)
    assert math.isnan(df["_probs_sum"].iloc[2])


def test_unknown_label_fails_with_count():
    rows = good_rows() + [make_row("u1", label="maybe"), make_row("u2", label="maybe")]
    report = validate(table(*rows), LABELS, min_rows=1)
    failure = only_failure(report, "expect_column_values_to_be_in_set", "label")
    assert failure["unexpected_count"] == 2 and "maybe" in failure["detail"]


def test_duplicate_id_fails():
    report = validate(table(*good_rows(), make_row("r0")), LABELS, min_rows=1)
    assert only_failure(report, "expect_column_values_to_be_unique", "id")["unexpected_count"] == 2


def test_probs_not_summing_to_one_fail():
    report = validate(table(*good_rows(), make_row("s", label_probs=[0.5, 0.4, 0.4])), LABELS, 1)
    assert only_failure(report, "expect_column_values_to_be_between", "_probs_sum")["unexpected_count"] == 1


def test_wrong_probs_length_fails():
    report = validate(table(*good_rows(), make_row("l", label_probs=[0.5, 0.5])), LABELS, 1)
    assert only_failure(report, "expect_column_values_to_be_between", "_probs_len")["unexpected_count"] == 1


def test_negative_weight_fails_and_message_names_it():
    report = validate(table(*good_rows(), make_row("w", weight=-0.5)), LABELS, 1)
    assert only_failure(report, "expect_column_values_to_be_between", "weight")["unexpected_count"] == 1
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_be_between on weight: 1 rows"):
        report.raise_if_failed()


def test_too_few_rows_and_missing_column_fail():
    report = validate(table(*good_rows(2)), LABELS, min_rows=3)
    only_failure(report, "expect_table_row_count_to_be_between", None)
    report = validate(table(*good_rows()).drop_columns(["weight"]), LABELS, min_rows=1)
    only_failure(report, "expect_table_columns_to_match_ordered_list", None)
    assert "weight" in str(ValidationFailed(report))


def test_thousand_rows_validate_in_seconds():
    rows = [make_row(f"{i:04d}", LABELS[i % 3], conf=0.5 + (i % 50) / 100) for i in range(1000)]
    start = time.perf_counter()
    report = validate(table(*rows), LABELS, min_rows=1000)
    elapsed = time.perf_counter() - start
    assert report.success, report.failures
    assert elapsed < 30, f"GE took {elapsed:.1f}s for 1,000 rows"


def test_label_collapse_fails_the_suite_and_is_tunable():
    collapsed = [make_row(f"c{i}", "pos") for i in range(38)] + [make_row("c38", "neg"),
                                                                 make_row("c39", "plot")]
    seeds = [make_row(f"s{i}", LABELS[i % 3], source="seed") for i in range(6)]
    report = validate(table(*collapsed, *seeds), LABELS, 1, max_label_share=0.9)
    failure = only_failure(report, "expect_column_values_to_be_between", "_label_share")
    assert failure["unexpected_count"] == 38   # every "pos" row, at share 0.95; seed rows not counted
    assert validate(table(*collapsed, *seeds), LABELS, 1, max_label_share=0.96).success
    assert validate(table(*collapsed), LABELS, 1, max_label_share=0.9, label_share_min_rows=41).success
    assert validate(table(*collapsed), LABELS, 1).success   # off unless asked for


def test_a_failure_says_in_plain_words_what_was_expected_found_and_where():
    collapsed = [make_row(f"c{i}", "pos", text=f"charged twice for invoice {i}") for i in range(38)]
    rows = collapsed + [make_row("c38", "neg"), make_row("c39", "plot"),
                         make_row("w", "neg", weight=-0.5)]
    report = validate(table(*rows), LABELS, 1, max_label_share=0.9)
    share = only_failure(report, "expect_column_values_to_be_between", "_label_share")
    assert share["message"].startswith("label share: no label should hold more than 0.9 of the "
                                       "teacher-labelled rows")
    assert "'pos' holds 0.93 of them (38 rows)" in share["message"]    # 38 of 41 teacher rows
    assert share["rows"][0] == {"id": "c0", "text": "charged twice for invoice 0"}
    weight = only_failure(report, "expect_column_values_to_be_between", "weight")
    assert weight["message"] == "weight: each value should be at least 0; found -0.5 in 1 of 41 rows"
    assert weight["rows"] == [{"id": "w", "text": "text w"}]
    json.dumps(report.failures)
    message = str(ValidationFailed(report))
    for needle in ("label share: no label should hold more than 0.9",
                   "rows: id 'c0' ('charged twice for invoice 0'), id 'c1'", "and 35 more",
                   "weight: each value should be at least 0; found -0.5",
                   # GE's own name stays in the details
                   "(GE: expect_column_values_to_be_between on _label_share: 38 rows failed",
                   "(GE: expect_column_values_to_be_between on weight: 1 rows failed"):
        assert needle in message, message
    plain = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(plain) == 2 and not any(re.search(r"(?<!\w)_(label_share|probs)", l) for l in plain)


def test_plain_words_for_the_probabilities_and_the_label_set():
    rows = good_rows() + [make_row("s", label_probs=[0.5, 0.4, 0.4]), make_row("l", label_probs=[0.5, 0.5]),
                          make_row("u", label="maybe", teacher_label="pos")]
    report = validate(table(*rows), LABELS, 1)
    messages = {f["column"]: f["message"] for f in report.failures}
    assert messages["_probs_sum"].startswith("label_probs: each row's probabilities should sum to 1 "
                                             "(within 0.001); found sums 1.3")
    assert messages["_probs_len"].startswith("label_probs: each row should hold 3 probabilities, "
                                             "one per label; found 2 in 1 of 7 rows")
    assert messages["label"] == ("label: each value should be one of 'neg', 'pos', 'plot'; "
                                 "found 'maybe' in 1 of 7 rows")


def test_a_chunked_failure_counts_the_whole_version(tmp_path):
    import pyarrow.parquet as pq

    from potstill.publish.expectations import validate_file

    rows = [make_row(f"{i:03d}", LABELS[i % 3]) for i in range(30)]
    rows[25] = make_row("025", LABELS[1], weight=-1.0)
    pq.write_table(table(*rows), tmp_path / "p.parquet")
    report = validate_file(tmp_path / "p.parquet", LABELS, min_rows=40, chunk_rows=10)
    messages = {f["expectation"]: f for f in report.failures}
    assert messages["expect_table_row_count_to_be_between"]["message"] == (
        "row count: a version should publish at least 40 rows; found 30")
    weight = messages["expect_column_values_to_be_between"]
    assert weight["message"].endswith("found -1 in 1 of 30 rows") and weight["rows"][0]["id"] == "025"
