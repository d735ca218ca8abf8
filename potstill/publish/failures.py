"""The gate's failures in plain words: what was expected, what was found, and which rows.

A failed expectation (potstill.publish.expectations) is a dict with GE's own name, column,
kwargs, unexpected count and sample values, and up to `SAMPLE_ROWS` offending rows (id and the
start of the text). `describe` turns it into one sentence a user can act on, e.g.
"label share: no label should hold more than 0.9 of the teacher-labelled rows; 'billing' holds
0.97 of them (970 rows)", and `rows_line` lists the rows. GE's name and raw detail stay in the
dict (and in the message's last line) for whoever reads GE's documentation.

The helper columns the suite checks `label_probs` and label collapse through (`_probs_len`,
`_probs_sum`, `_probs_min`, `_label_share`) are named after what they measure, never by their
own name: a user never sees those columns.
"""
from __future__ import annotations

from typing import Any

SAMPLE_ROWS = 3   # offending rows quoted per failure
TEXT_CHARS = 60   # of each quoted row's text


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return repr(v) if isinstance(v, str) else str(v)


def _values(sample: list) -> str:
    seen = list(dict.fromkeys(_num(v) for v in sample))
    return ", ".join(seen[:SAMPLE_ROWS]) if seen else "?"


def _rows(k: int | None, total: int | None) -> str:
    k_txt = "?" if k is None else f"{k:,}"
    return f"{k_txt} of {total:,} rows" if total else f"{k_txt} row{'' if k == 1 else 's'}"


def _bounds(kw: dict) -> str:
    low, high = kw.get("min_value"), kw.get("max_value")
    if low is not None and high is not None:
        return f"between {_num(low)} and {_num(high)}" if low != high else f"exactly {_num(low)}"
    if low is not None:
        return f"at least {_num(low)}"
    return f"at most {_num(high)}"


def _label_share(f: dict, shares: dict[str, float] | None) -> str:
    top = (f.get("kwargs") or {}).get("max_value")
    over = sorted(((share, label) for label, share in (shares or {}).items()
                   if top is not None and share > top), reverse=True)
    found = "; ".join(f"{label!r} holds {share:.2f} of them" for share, label in over) or \
        f"{_values(f.get('sample') or [])} found"
    return (f"label share: no label should hold more than {_num(top)} of the teacher-labelled "
            f"rows (validation.max_label_share); {found} ({f.get('unexpected_count')} rows)")


def missing_and_extra(observed: list, expected: list) -> tuple[list, list]:
    """The expected columns a table lacks, and the columns it has that were not expected."""
    return [c for c in expected if c not in observed], [c for c in observed if c not in expected]


def _columns(f: dict) -> str:
    observed = f.get("observed_value") if isinstance(f.get("observed_value"), list) else []
    missing, extra = missing_and_extra(observed, (f.get("kwargs") or {}).get("column_list") or [])
    found = "; ".join(part for part in (
        f"missing {', '.join(missing)}" if missing else "",
        f"not in the contract: {', '.join(extra)}" if extra else "") if part)
    return ("columns: the table should have the contract's columns, in its order; "
            + (found or f"found them in another order: {', '.join(map(str, observed))}"))


def describe(f: dict, total_rows: int | None = None,
             shares: dict[str, float] | None = None) -> str:
    """One sentence for the failure `f`: what was expected, what was found, in how many rows."""
    kind, column = f.get("expectation"), f.get("column")
    kw, sample = f.get("kwargs") or {}, f.get("sample") or []
    found = f"found {_values(sample)} in {_rows(f.get('unexpected_count'), total_rows)}"
    if kind == "expect_table_columns_to_match_ordered_list":
        return _columns(f)
    if kind == "expect_table_row_count_to_be_between":
        return (f"row count: a version should publish {_bounds(kw)} rows; found "
                f"{f.get('observed_value')}")
    if str(f.get("detail")).startswith("raised:"):
        return f"{column or 'table'}: the check could not run ({f['detail']})"
    if column == "_label_share":
        return _label_share(f, shares)
    if column == "_probs_len":
        return (f"label_probs: each row should hold {_num(kw.get('min_value'))} probabilities, "
                f"one per label; {found} (0: an empty or null list)")
    if column == "_probs_sum":
        low, high = kw.get("min_value") or 0.0, kw.get("max_value") or 0.0
        return (f"label_probs: each row's probabilities should sum to {_num((low + high) / 2)} "
                f"(within {_num((high - low) / 2)}); {found.replace('found ', 'found sums ', 1)}")
    if column == "_probs_min":
        return f"label_probs: no probability should be below 0; {found}"
    if kind == "expect_column_values_to_not_be_null":
        return (f"{column}: every row should have a value; found none in "
                f"{_rows(f.get('unexpected_count'), total_rows)}")
    if kind == "expect_column_values_to_be_unique":
        return (f"{column}: each value should appear once; found {_values(sample)} more than "
                f"once ({_rows(f.get('unexpected_count'), total_rows)})")
    if kind == "expect_column_values_to_be_in_set":
        allowed = ", ".join(map(repr, kw.get("value_set") or []))
        return f"{column}: each value should be one of {allowed}; {found}"
    if kind == "expect_column_values_to_be_between":
        return f"{column}: each value should be {_bounds(kw)}; {found}"
    return f"{column or 'table'}: {kind} failed; {found} ({f.get('detail')})"


def rows_line(f: dict) -> str | None:
    """'rows: id 'r3' ("the film was…"), …' for the failure's quoted rows, or None."""
    quoted = []
    for row in (f.get("rows") or [])[:SAMPLE_ROWS]:
        text = row.get("text")
        text = text if not isinstance(text, str) or len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "…"
        quoted.append(f"id {row.get('id')!r} ({text!r})")
    if not quoted:
        return None
    more = (f.get("unexpected_count") or 0) - len(quoted)
    return "rows: " + ", ".join(quoted) + (f" and {more:,} more" if more > 0 else "")
