"""Writing query results for people and for programs: an aligned text table, CSV, JSON, Parquet.

The text table is what the `potstill versions | query | label-issues` commands print by
default: one header line, a rule, one line per row, numbers right-aligned, long cells cut at
`max_width` characters with "…", NULL for missing values, floats to 4 decimals (scientific
notation only for very small or very large values), lists and objects as compact JSON.
CSV writes lists and objects as JSON text (CSV has no nested values); JSON is an array of
row objects; Parquet keeps the Arrow types and needs a file to write to.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "json", "parquet")


def _number(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v == 0 or 1e-4 <= abs(v) < 1e9:
        text = f"{v:.4f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return f"{v:.4g}"


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a cell (floats rounded for display)."""
    if isinstance(value, float):
        return float(_number(value)) if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def cell(value: Any, max_width: int = 60) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = _number(value)
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(_plain(value), separators=(", ", ": "), default=str)
    else:
        text = str(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= max_width else text[:max_width - 1] + "…"


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def format_table(table: pa.Table, max_width: int = 60) -> str:
    """An aligned plain-text table with a row count; every value on one line."""
    headers = table.column_names
    rows = [[cell(v, max_width) for v in row.values()] for row in table.to_pylist()]
    right = [_is_numeric(t) for t in table.schema.types]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if r else v.ljust(w)
                         for v, w, r in zip(values, widths, right)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)] if headers else []
    out += [line(r) for r in rows]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def to_csv(table: pa.Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(["" if v is None else
                         json.dumps(v, default=str) if isinstance(v, (list, dict)) else v
                         for v in row.values()])
    return buf.getvalue()


def to_json(table: pa.Table) -> str:
    return json.dumps(table.to_pylist(), indent=2, default=str) + "\n"


def write(table: pa.Table, fmt: str = "table", out: str | Path | None = None) -> str | None:
    """Render `table` as `fmt`; write it to `out` and return None, or return the text."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
    if fmt == "parquet":
        if out is None:
            raise ValueError("--format parquet needs --out FILE")
        pq.write_table(table, out)
        return None
    text = {"table": format_table, "csv": to_csv, "json": to_json}[fmt](table)
    if out is None:
        return text
    Path(out).write_text(text, encoding="utf-8")
    return None
