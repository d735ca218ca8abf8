"""The great-expectations gate: a suite derived from the column contract; a failure publishes nothing.

The suite is built from `contract.PUBLISHED_SCHEMA` and the task's labels, not written by hand,
so the SQL output, the Parquet schema and the gate cannot drift apart: every non-nullable
contract column gets a not-null check, label columns get the label set, and the columns must
appear in contract order.

GE has no expectations over list values, so `label_probs` is checked through helper columns
derived before validation (see `HELPER_COLUMNS`): `_probs_len` (non-null probabilities per row;
must equal the number of labels), `_probs_sum` (within 1e-3 of 1) and `_probs_min` (>= 0). They
exist only in the validated frame, never in published data.

Label collapse (a teacher that answers one label for nearly everything) is checked the same way:
`_label_share` is, on each teacher-labelled row (source != seed), the share of those rows that
carry its label; it must stay <= `validation.max_label_share`. It is null on seed rows, and on
every row when fewer than `validation.label_share_min_rows` rows are teacher-labelled (a share
of a handful of rows says nothing).

GE runs on pandas in an ephemeral, in-memory context with analytics and progress bars off: its
SQL/DuckDB datasource returns empty results in 1.24, and nothing here may need the network.
GE is imported lazily because its import alone takes seconds.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from potstill.publish import contract, failures as plain
from potstill import memory

HELPER_COLUMNS = ("_probs_len", "_probs_sum", "_probs_min", "_label_share")
PROBS_SUM_TOLERANCE = 1e-3
# float32 rounding can push the entropy of a uniform distribution just past ln(n).
ENTROPY_EPS = 1e-4
_SAMPLES = 5  # unexpected values quoted per failure
_QUOTED_CHARS = 200  # of an offending row's text, kept in the failure


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    return gx


def build_suite(labels: Sequence[str], min_rows: int, optional: Sequence[str] = (),
                max_label_share: float | None = None) -> list:
    """The expectations a published table must meet, derived from the contract and the labels.

    `optional` names the optional contract columns the table carries (stages switched on)."""
    gxe = _gx().expectations
    labels = list(labels)
    n = len(labels)
    columns = contract.column_names(contract.scored_schema(optional))
    suite = [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=columns + list(HELPER_COLUMNS)),
        gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
    ]
    suite += [gxe.ExpectColumnValuesToNotBeNull(column=f.name)
              for f in contract.PUBLISHED_SCHEMA if not f.nullable]
    suite += [
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels),
        gxe.ExpectColumnValuesToBeInSet(column="teacher_label", value_set=labels),
        gxe.ExpectColumnValuesToBeInSet(column="gold_label", value_set=labels),  # nulls pass
        gxe.ExpectColumnValuesToBeInSet(column="source", value_set=list(contract.SOURCES)),
        gxe.ExpectColumnValuesToBeBetween(column="teacher_confidence", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="teacher_margin", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="teacher_entropy", min_value=0.0,
                                          max_value=math.log(n) + ENTROPY_EPS),
        gxe.ExpectColumnValuesToBeBetween(column="weight", min_value=0.0),
        gxe.ExpectColumnValuesToBeBetween(column="_probs_len", min_value=n, max_value=n),
        gxe.ExpectColumnValuesToBeBetween(column="_probs_sum", min_value=1 - PROBS_SUM_TOLERANCE,
                                          max_value=1 + PROBS_SUM_TOLERANCE),
        gxe.ExpectColumnValuesToBeBetween(column="_probs_min", min_value=0.0),
    ]
    if max_label_share is not None:  # no label collapse (module docstring)
        suite.append(gxe.ExpectColumnValuesToBeBetween(column="_label_share", min_value=0.0,
                                                       max_value=max_label_share))
    if "student_label" in optional:  # signals: nulls pass (a TA is optional)
        suite.append(gxe.ExpectColumnValuesToBeInSet(column="student_label", value_set=labels))
        suite += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0)
                  for c in ("student_confidence", "student_consistency", "ta_teacher_confidence",
                            "ta_student_confidence")]
        suite.append(gxe.ExpectColumnValuesToBeBetween(column="student_entropy", min_value=0.0,
                                                       max_value=math.log(n) + ENTROPY_EPS))
    return suite


def _probs_helpers(table: pa.Table) -> dict[str, np.ndarray]:
    """Per-row length/sum/min of label_probs, vectorised with Arrow (no Python loop per row).

    A null or empty list gets length 0 (so it fails the length check) and NaN sum/min.
    """
    rows = table.num_rows
    length = np.zeros(rows, dtype=np.int64)
    total = np.full(rows, np.nan)
    low = np.full(rows, np.nan)
    if "label_probs" in table.column_names and rows:
        probs = table["label_probs"].combine_chunks()
        flat = pa.table({"row": pc.list_parent_indices(probs),
                         "p": pc.list_flatten(probs).cast(pa.float64())})
        agg = flat.group_by("row").aggregate([("p", "count"), ("p", "sum"), ("p", "min")])
        idx = agg["row"].to_numpy()
        length[idx] = agg["p_count"].to_numpy()
        total[idx] = agg["p_sum"].to_numpy(zero_copy_only=False)
        low[idx] = agg["p_min"].to_numpy(zero_copy_only=False)
    return {"_probs_len": length, "_probs_sum": total, "_probs_min": low}


def label_counts(table: pa.Table) -> Counter:
    """Teacher-labelled rows (source != seed) per label."""
    if not {"label", "source"} <= set(table.column_names):
        return Counter()
    return Counter(str(l) for l, src in zip(table["label"].to_pylist(), table["source"].to_pylist())
                   if src != "seed")


def label_shares(counts: Counter, min_rows: int) -> dict[str, float] | None:
    """Each label's share of the teacher-labelled rows; None under `min_rows` such rows."""
    total = sum(counts.values())
    if total < max(min_rows, 1):
        return None
    return {label: n / total for label, n in counts.items()}


def _label_share(table: pa.Table, shares: dict[str, float] | None) -> np.ndarray:
    """Per teacher-labelled row, its label's share (NaN elsewhere, and everywhere without shares)."""
    share = np.full(table.num_rows, np.nan)
    if shares is None or not {"label", "source"} <= set(table.column_names):
        return share
    for i, (label, src) in enumerate(zip(table["label"].to_pylist(), table["source"].to_pylist())):
        if src != "seed":
            share[i] = shares[str(label)]
    return share


def validation_frame(table: pa.Table, label_share_min_rows: int = 30,
                     shares: dict[str, float] | None | str = "table"):
    """The pandas frame GE validates: the table's columns plus the helper columns. `shares`:
    the label shares of the whole version when `table` is one chunk of it ("table": this
    table's own)."""
    if shares == "table":
        shares = label_shares(label_counts(table), label_share_min_rows)
    df = table.to_pandas()
    for name, values in _probs_helpers(table).items():
        df[name] = values
    df["_label_share"] = _label_share(table, shares)
    return df


@dataclass
class ValidationReport:
    success: bool
    failures: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # JSON-safe, for the manifest

    def raise_if_failed(self) -> None:
        if not self.success:
            raise ValidationFailed(self)


class ValidationFailed(Exception):
    """The gate refused a table; the message says, per failed expectation, what was expected,
    what was found and in which rows (potstill.publish.failures), then GE's own name, row count
    and detail."""

    def __init__(self, report: ValidationReport):
        self.report = report
        lines = []
        for f in report.failures:
            where = f" on {f['column']}" if f["column"] else ""
            rows = (f": {f['unexpected_count']} rows failed"
                    if f["unexpected_count"] is not None else "")
            lines.append(f"  - {f.get('message') or plain.describe(f)}")
            quoted = plain.rows_line(f)
            if quoted:
                lines.append(f"    {quoted}")
            lines.append(f"    (GE: {f['expectation']}{where}{rows} ({f['detail']}))")
        super().__init__(f"validation failed, {len(report.failures)} expectation(s):\n"
                         + "\n".join(lines))


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _exception_message(info: dict | None) -> str | None:
    """GE reports a raised metric either flat or keyed by metric id; take the first message."""
    info = info or {}
    nested = [info] + [v for v in info.values() if isinstance(v, dict)]
    for item in nested:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "exception").splitlines()[0]
    return None


def _columns_detail(observed: list, expected: list) -> str:
    missing, extra = plain.missing_and_extra(observed, expected)
    if missing or extra:
        return f"missing columns {missing}, unexpected columns {extra}"
    return f"columns out of contract order: {observed}"


def _rows(frame, result: dict) -> list[dict]:
    """The first offending rows GE points at (its partial index list), as id and the start of
    the text."""
    index = result.get("partial_unexpected_index_list") or []
    if frame is None or not index:
        return []
    picked = frame.loc[[i for i in index[:plain.SAMPLE_ROWS] if i in frame.index]]
    rows = _json_safe(picked[[c for c in ("id", "text") if c in frame.columns]].to_dict("records"))
    for row in rows:
        if isinstance(row.get("text"), str):
            row["text"] = row["text"][:_QUOTED_CHARS]
    return rows


def _summarise(r, frame=None) -> tuple[dict, dict | None]:
    cfg = r.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "column")}
    res = dict(r.result or {})
    raised = _exception_message(r.exception_info)
    summary = _json_safe({
        "expectation": cfg.type, "column": cfg.kwargs.get("column"), "success": bool(r.success),
        "kwargs": kwargs, "unexpected_count": res.get("unexpected_count"),
        "observed_value": res.get("observed_value"),
    })
    if r.success:
        return summary, None
    if raised:
        detail = f"raised: {raised}"
    elif "column_list" in kwargs and isinstance(res.get("observed_value"), list):
        detail = _columns_detail(res["observed_value"], kwargs["column_list"])
    elif "observed_value" in res:
        detail = f"observed {res['observed_value']!r}, expected {kwargs}"
    else:
        sample = res.get("partial_unexpected_list", [])[:_SAMPLES]
        detail = (f"expected {kwargs}; " if kwargs else "") + f"e.g. {sample!r}"
    failure = {"expectation": summary["expectation"], "column": summary["column"],
               "unexpected_count": summary["unexpected_count"], "detail": detail,
               "kwargs": kwargs, "observed_value": summary["observed_value"],
               "sample": _json_safe(res.get("partial_unexpected_list", [])[:_SAMPLES]),
               "rows": _rows(frame, res)}
    return summary, failure


def validate(table: pa.Table, labels: Sequence[str], min_rows: int,
             max_label_share: float | None = None, label_share_min_rows: int = 30) -> ValidationReport:
    """Validate a table against the contract suite; never raises for bad data, only reports.
    `max_label_share` (None = off) and `label_share_min_rows` are validation.* (module docstring)."""
    return validate_chunks([table], labels, min_rows, max_label_share,
                           label_shares(label_counts(table), label_share_min_rows))


def validate_file(path, labels: Sequence[str], min_rows: int, max_label_share: float | None = None,
                  label_share_min_rows: int = 30, chunk_rows: int = 50_000) -> ValidationReport:
    """Validate a published Parquet file `chunk_rows` rows at a time (memory stays flat): the
    label shares come from a first pass over two columns; the per-chunk results are merged,
    the row count summed, and an id repeated across a chunk boundary (the file is sorted by
    id) counted as a duplicate."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    counts: Counter = Counter()
    for batch in f.iter_batches(chunk_rows, columns=["label", "source"]):
        counts += label_counts(pa.Table.from_batches([batch]))

    def chunks():
        if f.metadata.num_rows == 0:  # the suite still runs: columns, row count
            yield f.schema_arrow.empty_table()
        for batch in f.iter_batches(chunk_rows):
            yield pa.Table.from_batches([batch])

    return validate_chunks(chunks(), labels, min_rows, max_label_share,
                           label_shares(counts, label_share_min_rows))


def validate_chunks(chunks: Iterable[pa.Table], labels: Sequence[str], min_rows: int,
                    max_label_share: float | None, shares: dict[str, float] | None) -> ValidationReport:
    """The suite over each chunk of one version (`shares`: its label shares), merged."""
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig)

    # A fresh in-memory context per call: nothing persists, names never collide between runs.
    context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False)))
    batch_def = (context.data_sources.add_pandas("potstill")
                 .add_dataframe_asset("published")
                 .add_batch_definition_whole_dataframe("all"))
    suite, parts, boundary_dups, last_id, total = None, [], 0, None, 0
    with memory.frozen_heap():  # each chunk's release() scans only what that chunk allocated
        for table in chunks:
            if suite is None:
                suite = context.suites.add(gx.ExpectationSuite(
                    name="potstill_published", expectations=build_suite(
                        labels, min_rows, contract.optional_present(table), max_label_share)))
            if table.num_rows and "id" in table.column_names:
                boundary_dups += last_id is not None and table["id"][0].as_py() == last_id
                last_id = table["id"][-1].as_py()
            total += table.num_rows
            frame = validation_frame(table, shares=shares)
            outcome = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(
                suite, result_format="SUMMARY")
            parts.append([_summarise(r, frame) for r in outcome.results])
            del table, frame, outcome
            memory.release()  # GE's objects hold the frame in cycles: free each chunk before the next

    results, failures = [], []
    for per_chunk in zip(*parts):
        summary, failure = _merge(list(per_chunk), boundary_dups)
        results.append(summary)
        if failure:  # in plain words, over the whole version (potstill.publish.failures)
            failures.append({**failure, "message": plain.describe(failure, total, shares)})
    return ValidationReport(success=not failures, failures=failures, results=results)


def _merge(parts: list[tuple[dict, dict | None]], boundary_dups: int) -> tuple[dict, dict | None]:
    """One expectation's results over the chunks of a version, as if validated whole."""
    summary, failure = parts[0]
    dups = boundary_dups if (summary["expectation"] == "expect_column_values_to_be_unique"
                             and summary["column"] == "id") else 0
    if len(parts) == 1 and not dups:
        return summary, failure
    summary = dict(summary)
    if summary["expectation"] == "expect_table_row_count_to_be_between":
        rows, kw = sum(s["observed_value"] for s, _ in parts), summary["kwargs"]
        ok = rows >= (kw.get("min_value") or 0) and (kw.get("max_value") is None or rows <= kw["max_value"])
        summary.update(observed_value=rows, success=ok)
        return summary, None if ok else {"expectation": summary["expectation"], "column": None,
                                         "unexpected_count": None, "kwargs": kw,
                                         "observed_value": rows,
                                         "detail": f"observed {rows!r}, expected {kw}"}
    counts = [s["unexpected_count"] for s, _ in parts if s["unexpected_count"] is not None]
    unexpected = sum(counts) + 2 * dups if counts or dups else None
    failed = [f for _, f in parts if f]
    summary.update(success=not failed and not dups, unexpected_count=unexpected)
    if summary["success"]:
        return summary, None
    first = dict(failed[0]) if failed else {"expectation": summary["expectation"],
                                            "column": summary["column"],
                                            "detail": f"{dups} id(s) repeated across chunks"}
    first["unexpected_count"] = unexpected
    return summary, first
