"""The teacher budget's ranking: run sql/budget.sql over the candidates in DuckDB.

Like curation, the query decides and this module wires it up: the candidates are registered
as a view, the values are bound by name, and the result is checked (no more than `n` rows,
only candidate ids, no id twice), so an edited query can not overspend the budget.
"""
from __future__ import annotations

import duckdb
import pyarrow as pa

from potstill.publish.curation import load_query, query_parameters

BUDGET_QUERY = "budget.sql"


def budget_ranking(candidates: pa.Table, n: int, strategy: str, seed: int, n_labels: int,
                   query: str = BUDGET_QUERY) -> list[str]:
    """Ids of at most `n` candidates, in the order the query picked them."""
    if n < 0:
        raise ValueError(f"budget: n must be >= 0, got {n}")
    path, sql = load_query(query)
    available = {"n": n, "strategy": strategy, "seed": seed, "n_labels": n_labels}
    unknown = [p for p in query_parameters(sql) if p not in available]
    if unknown:
        raise ValueError(f"budget query {path} uses unknown parameters: {unknown}")
    params = {p: available[p] for p in query_parameters(sql)}
    con = duckdb.connect(":memory:")
    try:
        con.register("candidates", candidates)
        ids = [row[0] for row in con.sql(sql, params=params).fetchall()]
    finally:
        con.close()
    known = set(candidates["id"].to_pylist())
    if len(ids) > n or len(set(ids)) != len(ids) or not set(ids) <= known:
        raise ValueError(f"budget query {path} must return at most {n} distinct candidate ids, "
                         f"got {len(ids)} ({len(set(ids))} distinct, "
                         f"{len(set(ids) - known)} not candidates)")
    return ids
