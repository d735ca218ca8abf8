"""Curation: run a query from sql/ over the staged shards in DuckDB and split kept from filtered.

The query decides; this module only wires it up. It registers the staged rows as a view named
`staged`, binds the thresholds by name (values never become SQL text, so a config value can
not change what the query does), checks the output against the column contract, and splits it
on `filter_reason`: null rows are published, the rest go to filtered.parquet with their
reason. Counts must reconcile: a query that drops or duplicates rows is an error, because a
row that vanishes without a reason cannot be audited later.

Parameters a query may use: `$min_confidence`, `$max_per_label` (NULL = no cap), `$labels`
(the task's label list), `$n_labels`, and sql/select.sql's `$llkd`, `$ta_weighting`,
`$confidence_scale`, `$need_scale`, `$momentum`, `$weight_floor` (config `curation.*`). Only the
ones the query mentions are bound: DuckDB refuses extra ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import duckdb
import pyarrow as pa
from pydantic import ValidationError

from potstill.publish import contract
from potstill.config.core import ConfigError, Curation

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
# Comments and string literals are removed before looking for $names, so "-- uses $x" in a
# header comment does not count as a use.
_COMMENT_OR_STRING = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'", re.S)


@dataclass
class CurationResult:
    published: pa.Table          # contract.PUBLISHED_SCHEMA, ordered by id
    filtered: pa.Table           # contract.FILTERED_SCHEMA, with filter_reason, ordered by id
    sql: str                     # the query text as run (saved with the version for lineage)
    params: dict[str, Any] = field(default_factory=dict)  # the values bound, JSON-serialisable
    query_path: str = ""


def sql_dir() -> Path:
    """The folder of the `potstill.sql` package (the card's `sql/` folder)."""
    return Path(str(resources.files("potstill.sql")))


def load_query(name: str) -> tuple[Path, str]:
    """Find a query: a bare file name is looked up under sql/, anything else is a path.

    Relative paths are relative to the working directory (config loading does not resolve
    `curation.query`). Only existing `.sql` files are accepted, so a typo fails here, before
    any data is read, with the list of queries that do exist.
    """
    if not name or not name.strip():
        raise ValueError("curation.query is empty")
    bare = "/" not in name and "\\" not in name
    path = sql_dir() / name if bare else Path(name).expanduser()
    if path.suffix != ".sql":
        raise ValueError(f"curation.query must name a .sql file, got {name!r}")
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in sql_dir().glob("*.sql"))) or "none"
        raise ValueError(f"curation query not found: {path} (queries under sql/: {known})")
    return path.resolve(), path.read_text(encoding="utf-8")


def query_parameters(sql: str) -> list[str]:
    """The `$name` parameters a query uses, in first-use order."""
    names = _PARAM.findall(_COMMENT_OR_STRING.sub(" ", sql))
    return list(dict.fromkeys(names))


def _validated(cfg: Curation | Mapping[str, Any]) -> Curation:
    # Re-validate even a Curation: one built with model_construct() skips its checks.
    raw = cfg.model_dump(warnings=False) if isinstance(cfg, Curation) else dict(cfg)
    try:
        return Curation.model_validate(raw)
    except ValidationError as err:
        lines = [f"  curation.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise ConfigError("invalid curation config:\n" + "\n".join(lines)) from None


def check_settings(curation_cfg: Curation | Mapping[str, Any]) -> None:
    """Before any work: the query exists and every `curation.*` setting the user gave is one
    it reads."""
    path, sql = load_query(_validated(curation_cfg).query)
    _refuse_unused_settings(curation_cfg, query_parameters(sql), path)
    with duckdb.connect(":memory:") as con:
        _refuse_writes(con, sql, path)


def _refuse_unused_settings(given: Curation | Mapping[str, Any], used: list[str], path: Path) -> None:
    """A `curation.*` setting the user gave a non-default value that the chosen query never reads
    would silently do nothing: refuse it, naming the key (e.g. `max_per_label` with
    sql/select.sql). Defaults pass, so a config dumped whole (a manifest's) still loads."""
    values = given.model_dump() if isinstance(given, Curation) else dict(given)
    defaults = {k: f.default for k, f in Curation.model_fields.items()}
    unused = sorted(k for k, v in values.items()
                    if k != "query" and k in defaults and k not in used and v != defaults[k])
    if unused:
        keys = ", ".join(f"curation.{k}" for k in unused)
        raise ConfigError(f"{keys}: set, but the curation query {path.name} does not use "
                          f"{', '.join('$' + k for k in unused)}; remove the setting or choose a "
                          "query that reads it")


def _register_staged(con: duckdb.DuckDBPyConnection, staged: Sequence[str] | pa.Table) -> None:
    if isinstance(staged, pa.Table):
        con.register("staged", staged)
        return
    paths = [staged] if isinstance(staged, str) else [str(p) for p in staged]
    if not paths:
        # No shards (everything was rejected upstream): curate an empty table, not an error.
        con.register("staged", contract.SCORED_SCHEMA.empty_table())
        return
    # The path list is a bound parameter too: file names never become SQL text.
    con.sql("select * from read_parquet($paths)", params={"paths": paths}).create_view("staged")


def _check_output(con: duckdb.DuckDBPyConnection, staged_rows: int, path: Path) -> None:
    """The materialised `curated` table has every contract column and one row per staged row."""
    columns = [r[0] for r in con.execute("select column_name from (describe curated)").fetchall()]
    wanted = contract.column_names(contract.SCORED_SCHEMA) + [contract.FILTER_REASON.name]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(f"curation query {path} output is missing columns: {', '.join(missing)}")
    rows = con.execute("select count(*) from curated").fetchall()[0][0]
    if rows != staged_rows:
        raise ValueError(
            f"curation query {path} returned {rows} rows for {staged_rows} staged rows: "
            "it must return every staged row and mark dropped ones with filter_reason")


# What a curation query decides: filter_reason and weight. Everything the reader and the teacher
# produced passes through unchanged, and `label` follows the contract's rule.
UNCHANGED = ("text", "source", "gold_label", "label_probs", "teacher_label", "teacher_confidence",
             "teacher_entropy", "teacher_margin")
# The reasons a curation query may give (sql/curate.sql, sql/select.sql); a custom query names
# its own `custom_<name>`. Reasons the job itself gives (duplicate, test_overlap, over_budget)
# are not a query's to give.
FILTER_REASONS = ("low_confidence", "label_cap", "llkd_student_confident", "llkd_teacher_unsure")
_CUSTOM_REASON = re.compile(r"custom_[a-z0-9_]{1,60}")


def _check_integrity(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Every curated row is a staged row (by id, once) with its text, source, gold label and
    teacher columns unchanged; `label` is the gold label on seed rows and the teacher's label
    elsewhere; filter reasons come from FILTER_REASONS or `custom_*`; seed (gold) rows are never
    filtered; weights are finite and >= 0. Checked in SQL, by id: a query that forges data is
    refused before anything is published, naming the first row and column."""
    def first(sql: str):
        return con.execute(sql).fetchone()

    row = first("select id, count(*) from curated group by id having count(*) > 1 order by id limit 1")
    if row:
        raise ValueError(f"curation query {path} returned row {row[0]} {row[1]} times")
    row = first("select c.id from curated c anti join staged s on c.id = s.id order by c.id limit 1")
    if row:
        raise ValueError(f"curation query {path} returned row {row[0]}, which is not a staged row")
    changed = " or ".join(f'c."{col}" is distinct from s."{col}"' for col in UNCHANGED)
    cases = " ".join(f"when c.\"{col}\" is distinct from s.\"{col}\" then '{col}'" for col in UNCHANGED)
    row = first(f"select c.id, case {cases} end from curated c join staged s on c.id = s.id "
                f"where {changed} order by c.id limit 1")
    if row:
        raise ValueError(f"curation query {path} changed column {row[1]!r} of row {row[0]}: a curation "
                         "query decides filter_reason and weight only")
    row = first("select id, label from curated where label is distinct from "
                "(case when source = 'seed' then gold_label else teacher_label end) order by id limit 1")
    if row:
        raise ValueError(f"curation query {path} set label {row[1]!r} on row {row[0]}: label is the "
                         "gold label on seed rows and the teacher's label elsewhere")
    row = first("select id from curated where filter_reason is not null and source = 'seed' "
                "order by id limit 1")
    if row:
        raise ValueError(f"curation query {path} filtered gold seed row {row[0]}: seed rows are "
                         "always published")
    row = first("select id, weight from curated where not (isfinite(weight) and weight >= 0) "
                "order by id limit 1")
    if row:
        raise ValueError(f"curation query {path} gave row {row[0]} weight {row[1]}: weights are "
                         "finite and >= 0")
    for (reason,) in con.execute("select distinct filter_reason from curated "
                                 "where filter_reason is not null order by 1").fetchall():
        if reason not in FILTER_REASONS and not _CUSTOM_REASON.fullmatch(str(reason)):
            raise ValueError(f"curation query {path} gave filter_reason {reason!r}: use one of "
                             f"{', '.join(FILTER_REASONS)}, or name your own custom_<name>")


def _query(curation_cfg: Curation | Mapping[str, Any], labels: Sequence[str]) -> tuple[Path, str, dict]:
    """The configured query, its text and the parameters it binds."""
    cfg = _validated(curation_cfg)
    path, sql = load_query(cfg.query)
    available = {"min_confidence": cfg.min_confidence, "max_per_label": cfg.max_per_label,
                 "labels": list(labels), "n_labels": len(labels), "llkd": cfg.llkd,
                 "ta_weighting": cfg.ta_weighting, "confidence_scale": cfg.confidence_scale,
                 "need_scale": cfg.need_scale, "momentum": cfg.momentum,
                 "weight_floor": cfg.weight_floor}
    used = query_parameters(sql)
    _refuse_unused_settings(curation_cfg, used, path)
    unknown = [p for p in used if p not in available]
    if unknown:
        raise ValueError(f"curation query {path} uses unknown parameters: "
                         f"{', '.join('$' + p for p in unknown)} (known: "
                         f"{', '.join('$' + p for p in available)})")
    return path, sql, {p: available[p] for p in used}


# One read-only query: what DuckDB's parser calls SELECT (FROM, WITH, VALUES, DESCRIBE, SHOW,
# SUMMARIZE, UNPIVOT), EXPLAIN, or MULTI (a single PIVOT, which DuckDB expands itself).
READ_ONLY_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN,
                   duckdb.StatementType.MULTI}


def read_only_refusal(con: duckdb.DuckDBPyConnection, sql: str) -> str | None:
    """Why `sql` is not exactly one read-only query, by DuckDB's own parser (comments and
    string literals are the parser's business, not ours); None when it is one."""
    statements = con.extract_statements(sql)
    kinds = [s.type.name for s in statements]
    if len(statements) != 1:
        return f"the SQL holds {len(statements)} statements ({', '.join(kinds) or 'none'})"
    if statements[0].type not in READ_ONLY_TYPES:
        return f"{kinds[0]} statement"
    return None


def lock_down(con: duckdb.DuckDBPyConnection, readable: Sequence[str | Path]) -> None:
    """From here on `con` reads files only under the `readable` folders, loads no extension and
    its settings cannot be changed back (DuckDB's own switches): user SQL run on it can read
    the tables and views already there, and nothing else on the machine."""
    con.execute("SET allowed_directories = $dirs",
                {"dirs": [str(Path(d).resolve()).rstrip("/") + "/" for d in readable]})
    for setting in ("SET autoinstall_known_extensions = false",
                    "SET autoload_known_extensions = false",
                    "SET enable_external_access = false", "SET lock_configuration = true"):
        con.execute(setting)


def _refuse_writes(con: duckdb.DuckDBPyConnection, sql: str, path: Path) -> None:
    refusal = read_only_refusal(con, sql)
    if refusal:
        raise ConfigError(f"curation query {path} refused: {refusal}; a curation query is one "
                          "SELECT over `staged` that returns every row (dropped ones marked with "
                          "filter_reason)")


def run_query(con: duckdb.DuckDBPyConnection, labels: Sequence[str],
              curation_cfg: Curation | Mapping[str, Any]) -> CurationResult:
    """Run the configured query (one SELECT: anything else is refused) over the view `staged`
    into the table `curated` (DuckDB spills it to disk when it outgrows memory) and check it;
    callers `lock_down` the connection first, so the query reads nothing else; `published` and
    `filtered` of the result are left None: read them with `CURATED_*` below."""
    path, sql, params = _query(curation_cfg, labels)
    _refuse_writes(con, sql, path)
    staged_rows = con.execute("select count(*) from staged").fetchall()[0][0]
    try:
        con.sql(sql, params=params).create("curated")
    except duckdb.BinderException as err:  # e.g. select.sql over a run without signals
        raise ValueError(f"curation query {path} does not fit the staged columns: {err} "
                         "(sql/select.sql needs signals.enabled)") from None
    except duckdb.PermissionException as err:  # a file outside the staged rows, an extension
        raise ValueError(f"curation query {path} refused: it reads outside the staged rows "
                         f"({err}); the teacher's answers are kept in the store, so a rerun with "
                         "a fixed query costs no teacher call") from None
    _check_output(con, staged_rows, path)
    _check_integrity(con, path)
    return CurationResult(published=None, filtered=None, sql=sql, params=params,
                          query_path=str(path))


# The split of `curated`, ordered as published (by id, whatever a custom query does).
CURATED_PUBLISHED = "select * from curated where filter_reason is null order by id"
CURATED_FILTERED = "select * from curated where filter_reason is not null order by id"


def curate(staged: Sequence[str] | pa.Table, labels: Sequence[str],
           curation_cfg: Curation | Mapping[str, Any]) -> CurationResult:
    """Run the configured curation query over staged Parquet paths (or an Arrow table), in
    memory (the job streams instead: potstill/job.py)."""
    con = duckdb.connect(":memory:")
    try:
        _register_staged(con, staged)
        paths = [] if isinstance(staged, pa.Table) else [staged] if isinstance(staged, str) else staged
        lock_down(con, sorted({str(Path(p).parent) for p in paths}))
        result = run_query(con, labels, curation_cfg)
        published = con.sql(CURATED_PUBLISHED).to_arrow_table()
        filtered = con.sql(CURATED_FILTERED).to_arrow_table()
    finally:
        con.close()
    optional = contract.optional_present(published)
    result.published = contract.conform(published, contract.scored_schema(optional))
    result.filtered = contract.conform(filtered, contract.filtered_schema(optional))
    return result
