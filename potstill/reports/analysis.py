"""The read side of published versions: list them, diff two, query one in SQL, find label issues.

Nothing here writes into a version (they are immutable). The `potstill versions | diff |
query | label-issues` commands are thin wrappers over these functions.

Where versions live: `--root`, else $POTSTILL_OUTPUT_ROOT, else ./potstill-datasets. A version is named
`DATASET` (its latest) or `DATASET@vN`; names are checked by versions.resolve_version. Any
reference with a slash is taken as the path of a version folder instead.

Querying a version (`open_version`) gives an in-memory DuckDB connection with four tables,
loaded from the version's files (opened read-only) into memory:
    data      data/*.parquet     (contract.PUBLISHED_SCHEMA, plus optional columns)
    filtered  filtered.parquet   (contract.FILTERED_SCHEMA: ... + filter_reason)
    rejected  rejected.parquet   (contract.REJECTED_SCHEMA: ... reason, detail, raw)
    manifest  one row, one column per top-level manifest key: scalars keep their type
              (VARCHAR, BIGINT, DOUBLE, BOOLEAN), `labels` is VARCHAR[], every other nested
              value (counts, config, teacher_audit, validation, ...) is DuckDB JSON:
              `select counts->>'$.totals.read' as read from manifest`.

Read-only: once the tables are loaded, DuckDB's own settings switch external access off
(`enable_external_access=false`: no file, directory, database, extension or secret can be read
or written; nothing needs to stay allowed, since the data is in memory) and lock the
configuration (`lock_configuration=true`: no SET/RESET/PRAGMA can turn it back on). The user's
SQL must also parse, by DuckDB's parser, as exactly ONE read-only query (SELECT, FROM, WITH,
VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT, EXPLAIN): a second statement, or COPY, EXPORT,
ATTACH, INSTALL, LOAD, SET, PRAGMA, CALL, CREATE, INSERT ... is refused (`QueryRefused`, naming
the statement) before anything runs. Nothing typed can change a version, even as root.

Bounded: every query run for a user has a memory limit and a time limit (`Limits`: the
commands' --memory-limit, default $POTSTILL_QUERY_MEMORY_LIMIT or 1GB, and --timeout, default
$POTSTILL_QUERY_TIMEOUT or 60 s). The memory limit is DuckDB's `memory_limit` (with `threads`),
set when the connection opens, before the lock, so no query can raise it; it holds the
version's tables too, since they are loaded into memory. The result is fetched in batches and
may hold at most as many bytes of Arrow data (a 16th of them when it is printed as text, which
takes ~6-13x its Arrow size in Python). The time limit is a timer that interrupts the query
(`con.interrupt()`). Passing either limit stops the query with `QueryLimit`, whose message
names the flag to raise; `diff` and `label_issues` take the same limits.

Parameters: a query names them `$name` and DuckDB binds the values; they never become SQL
text. A query file declares defaults in its header, one line each:
    -- @param $name = VALUE   what it means
VALUE is JSON (10, 0.8, "text", null). A value given by the caller (`--param name=value`) is
read as JSON when it parses (5, 0.9, null, true, "5") and as a plain string otherwise. A
parameter the query does not use, or a used one with no value, is an error that names it.
"""
from __future__ import annotations

import json
import os
import re
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from potstill.publish import versions
from potstill.publish.curation import lock_down, query_parameters, read_only_refusal, sql_dir

ROOT_ENV = "POTSTILL_OUTPUT_ROOT"
MEMORY_ENV, TIMEOUT_ENV = "POTSTILL_QUERY_MEMORY_LIMIT", "POTSTILL_QUERY_TIMEOUT"
DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT_S = "1GB", 60.0
TEXT_SHARE = 16           # a result printed as text may hold this share of the memory limit
_MIN_MEMORY = 16 * 2**20  # DuckDB needs a few MiB of its own
_BATCH_ROWS = 4096        # rows per fetched batch: a result overshoots its limit by one at most
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)\s*", re.I)
_DEFAULT = re.compile(r"^\s*--\s*@param\s+\$([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\S+)", re.M)
_ABSENT = object()


class AnalysisError(ValueError):
    """A bad query file, parameter or version reference; phrased for the user."""


class QueryRefused(AnalysisError):
    """User SQL that the read-only analyst connection does not run; the message names it."""


class QueryLimit(AnalysisError):
    """A query stopped by its memory or time limit; the message names the flag to raise."""


def _size(value: str) -> int:
    match = _SIZE.fullmatch(value)
    if not match:
        raise AnalysisError(f"--memory-limit: {value!r} is not a size (e.g. 512MB, 4GB, 2GiB)")
    return int(float(match[1]) * _UNITS[match[2].lower()])


@dataclass(frozen=True)
class Limits:
    """What one command's DuckDB work may use (module docstring): `memory_limit` a size
    (`1GB` = 10^9 bytes, `1GiB` = 2^30), `timeout_s` seconds per query (None or 0: none),
    `threads` DuckDB's (None: every core), `text_output` True when the result is printed as
    text (it may then hold a 16th of the memory limit)."""
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    threads: int | None = None
    text_output: bool = False

    def __post_init__(self):
        if self.memory_bytes < _MIN_MEMORY:
            raise AnalysisError(f"--memory-limit: {self.memory_limit} is too small (at least 16MiB)")
        if self.timeout_s is not None and not self.timeout_s >= 0:
            raise AnalysisError(f"--timeout: {self.timeout_s:g} is not a number of seconds >= 0 "
                                "(0 = no time limit)")
        if self.threads is not None and self.threads < 1:
            raise AnalysisError(f"--threads: {self.threads} is not a number of threads >= 1")

    @classmethod
    def resolve(cls, memory_limit: str | None = None, timeout_s: float | None = None,
                threads: int | None = None, text_output: bool = False) -> "Limits":
        """The commands' flags, else $POTSTILL_QUERY_MEMORY_LIMIT / $POTSTILL_QUERY_TIMEOUT, else
        the defaults (1GB, 60 s)."""
        if timeout_s is None and os.environ.get(TIMEOUT_ENV):
            try:
                timeout_s = float(os.environ[TIMEOUT_ENV])
            except ValueError:
                raise AnalysisError(f"${TIMEOUT_ENV}: {os.environ[TIMEOUT_ENV]!r} is not a number "
                                    "of seconds") from None
        return cls(memory_limit or os.environ.get(MEMORY_ENV) or DEFAULT_MEMORY_LIMIT,
                   DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s, threads, text_output)

    @property
    def memory_bytes(self) -> int:
        return _size(self.memory_limit)

    @property
    def result_bytes(self) -> int:
        return self.memory_bytes // (TEXT_SHARE if self.text_output else 1)

    def config(self) -> dict[str, Any]:
        """DuckDB settings for `duckdb.connect`: in force before anything can lock them."""
        return {"memory_limit": f"{self.memory_bytes}B", "threads": self.threads or os.cpu_count() or 1}


def _bigger(size: str) -> str:
    return f"{max(1, round(_size(size) * 4 / 10**9))}GB"


@contextmanager
def bounded(con: duckdb.DuckDBPyConnection, limits: Limits | None, what: str = "the query",
            timed: bool = True) -> Iterator[None]:
    """Run DuckDB work on `con` under `limits`: a timer interrupts it after `timeout_s` (when
    `timed`), and running out of the time or the memory limit raises QueryLimit saying which
    flag to raise. No limits: DuckDB's own defaults and errors."""
    fired = threading.Event()

    def interrupt():
        fired.set()
        con.interrupt()

    timer = None
    if limits is not None and timed and limits.timeout_s:
        timer = threading.Timer(limits.timeout_s, interrupt)
        timer.daemon = True
        timer.start()
    try:
        yield
    except duckdb.InterruptException:
        if not fired.is_set():
            raise
        raise QueryLimit(f"{what} stopped after {limits.timeout_s:g} s, its time limit: raise it with "
                         f"--timeout SECONDS (or ${TIMEOUT_ENV}; 0 = none), e.g. --timeout "
                         f"{limits.timeout_s * 10:g}, or narrow the query") from None
    except duckdb.OutOfMemoryException as err:
        if limits is None:
            raise
        first = str(err).strip().splitlines()[0]
        raise QueryLimit(f"{what} needs more memory than its limit, --memory-limit "
                         f"{limits.memory_limit} ({first}): raise it with --memory-limit SIZE (or "
                         f"${MEMORY_ENV}), e.g. --memory-limit {_bigger(limits.memory_limit)}, or "
                         "narrow the query (a LIMIT, fewer rows or columns)") from None
    finally:
        if timer is not None:
            timer.cancel()


def _fetch(rel: duckdb.DuckDBPyRelation, limits: Limits | None) -> pa.Table:
    """The relation's rows as one Arrow table, at most `limits.result_bytes` of them."""
    if limits is None:
        return rel.to_arrow_table()
    reader = rel.to_arrow_reader(_BATCH_ROWS)
    try:
        batches, size = [], 0
        for batch in reader:
            size += batch.nbytes
            if size > limits.result_bytes:
                share = (f"a {TEXT_SHARE}th of --memory-limit {limits.memory_limit}, since it is "
                         "printed as text" if limits.text_output
                         else f"--memory-limit {limits.memory_limit}")
                parquet = ", write it with --format parquet --out FILE" if limits.text_output else ""
                raise QueryLimit(f"the result passed {size / 2**20:,.0f} MiB, the most it may hold "
                                 f"({share}): add a LIMIT or select fewer columns{parquet}, or raise "
                                 f"--memory-limit (or ${MEMORY_ENV})")
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)
    finally:
        reader.close()


def default_root() -> str:
    return os.environ.get(ROOT_ENV) or "potstill-datasets"


def locate(root: str | os.PathLike | None, ref: str) -> Path:
    """`DATASET` / `DATASET@vN` under root, or the folder of a version when `ref` has a slash."""
    if "/" in ref or os.sep in ref:
        path = Path(ref).expanduser()
        if not (path / versions.MANIFEST).is_file():
            raise AnalysisError(f"{ref} is not a published version folder (no {versions.MANIFEST})")
        return path
    return versions.resolve_version(root if root is not None else default_root(), ref)


def version_ref(version_dir: Path) -> str:
    m = versions.read_manifest(version_dir)
    return f"{m.get('dataset', version_dir.parent.name)}@{m.get('version', version_dir.name)}"


# -- versions ------------------------------------------------------------------------------

def versions_table(root: str | os.PathLike | None, dataset: str) -> pa.Table:
    """One row per published version, oldest first: what `potstill versions` prints."""
    status = {True: "passed", False: "failed", None: "unknown"}
    rows = [{"version": v["version"], "rows": v["rows"], "created": v["created_at"],
             "parent": v["parent_version"], "config": (v["config_digest"] or "")[:12] or None,
             "validation": status.get(v["validation_success"], "unknown")}
            for v in versions.list_versions(root if root is not None else default_root(), dataset)]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("version", pa.string()), ("rows", pa.int64()), ("created", pa.string()),
        ("parent", pa.string()), ("config", pa.string()), ("validation", pa.string())]))


# -- query ---------------------------------------------------------------------------------

def _manifest_table(con: duckdb.DuckDBPyConnection, manifest: Mapping[str, Any]) -> None:
    columns, nested = {}, []
    for key, value in manifest.items():
        if key == "labels" and isinstance(value, list):
            columns[key] = pa.array([value], pa.list_(pa.string()))
        elif isinstance(value, (dict, list)):
            columns[key] = pa.array([json.dumps(value, sort_keys=True)], pa.string())
            nested.append(key)
        else:
            columns[key] = pa.array([value], pa.string() if value is None else None)
    con.register("_manifest_raw", pa.table(columns))
    # Identifiers, not values: manifest keys are quoted, never bound (DuckDB cannot bind names).
    quoted = ['"' + k.replace('"', '""') + '"' for k in nested]
    replace = f" replace ({', '.join(f'cast({q} as json) as {q}' for q in quoted)})" if nested else ""
    con.execute(f"create table manifest as select *{replace} from _manifest_raw")
    con.unregister("_manifest_raw")


def open_tables(*, data: Sequence[str] | pa.Table, filtered: Sequence[str] | pa.Table,
                rejected: Sequence[str] | pa.Table, manifest: Mapping[str, Any],
                load: bool = True, limits: Limits | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection with the four tables, loaded into memory from Parquet paths or
    Arrow tables; then external access is off and the configuration locked (module docstring),
    after DuckDB's memory limit and threads are set from `limits` (default `Limits()`).
    `load=False` (potstill's own queries only, e.g. the report): views that read the Parquet
    files as each query runs, so memory does not grow with the version; nothing is locked, and
    DuckDB's own defaults hold unless `limits` are given."""
    if limits is None and load:
        limits = Limits()
    # No temp directory: DuckDB keeps its temp directory writable even with external access
    # off (measured: with the default `.tmp`, or /tmp, COPY into it still works).
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "allow_community_extensions": False, "temp_directory": "",
        **(limits.config() if limits else {})})
    try:
        with bounded(con, limits, "loading the version into memory", timed=False):
            _load(con, data, filtered, rejected, manifest, load)
        if load:
            lock_down(con, [])
    except BaseException:
        con.close()
        raise
    return con


def _load(con: duckdb.DuckDBPyConnection, data, filtered, rejected, manifest, load: bool) -> None:
    for name, source in (("data", data), ("filtered", filtered), ("rejected", rejected)):
        if isinstance(source, pa.Table):
            con.register("_source", source)
            con.execute(f"create table {name} as select * from _source")
            con.unregister("_source")
        elif load:
            # File names are bound too, so a folder name can never change the query.
            con.execute(f"create table {name} as select * from read_parquet($paths)",
                        {"paths": [str(p) for p in source]})
        else:
            con.sql("select * from read_parquet($paths)",
                    params={"paths": [str(p) for p in source]}).create_view(name)
    _manifest_table(con, manifest)


def open_version(version_dir: str | os.PathLike, load: bool = True,
                 limits: Limits | None = None) -> duckdb.DuckDBPyConnection:
    vdir = Path(version_dir)
    data = sorted(str(p) for p in (vdir / "data").glob("*.parquet"))
    if not data:
        raise AnalysisError(f"{vdir} has no data/*.parquet")
    return open_tables(data=data, filtered=[str(vdir / "filtered.parquet")],
                       rejected=[str(vdir / "rejected.parquet")],
                       manifest=versions.read_manifest(vdir), load=load, limits=limits)


def analysis_dir() -> Path:
    return sql_dir() / "analysis"


def load_sql(file: str | os.PathLike) -> tuple[Path, str]:
    """A query file by path, or by name under sql/analysis/ (`calibration` or `calibration.sql`)."""
    name = str(file)
    path = Path(name).expanduser()
    if not path.is_file() and "/" not in name:
        path = analysis_dir() / (name if name.endswith(".sql") else name + ".sql")
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in analysis_dir().glob("*.sql"))) or "none"
        raise AnalysisError(f"query file not found: {name} (queries under sql/analysis/: {known})")
    return path, path.read_text(encoding="utf-8")


def declared_defaults(sql: str) -> dict[str, Any]:
    """The `-- @param $name = VALUE` defaults of a query's header."""
    out = {}
    for name, raw in _DEFAULT.findall(sql):
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            raise AnalysisError(f"@param ${name}: default {raw!r} is not JSON") from None
    return out


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """`name=value` strings (the CLI's --param) -> {name: value}; values as JSON when they parse."""
    out = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise AnalysisError(f"--param expects NAME=VALUE, got {pair!r}")
        try:
            out[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.strip()] = raw
    return out


def bind(sql: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values to bind: the query's declared defaults overridden by `given`, used ones only."""
    given = dict(given or {})
    used = query_parameters(sql)
    unknown = [p for p in given if p not in used]
    if unknown:
        raise AnalysisError(f"the query does not use parameter(s) {', '.join('$' + p for p in unknown)}"
                            f" (it uses: {', '.join('$' + p for p in used) or 'none'})")
    values = {**declared_defaults(sql), **given}
    missing = [p for p in used if p not in values]
    if missing:
        raise AnalysisError("the query needs a value for " + ", ".join(
            f"${p} (--param {p}=VALUE)" for p in missing))
    return {p: values[p] for p in used}


def check_query(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse SQL that is not exactly one read-only query (potstill/publish/curation.py decides)."""
    refusal = read_only_refusal(con, sql)
    if refusal:
        raise QueryRefused(f"refused: {refusal}; potstill query runs exactly one read-only query "
                           "(SELECT, FROM, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT, EXPLAIN) "
                           "and versions are immutable")


def execute(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None,
            limits: Limits | None = None) -> pa.Table:
    """Run one user query on a read-only connection (`open_tables`), its time and result
    bounded by `limits` (None: unbounded, potstill's own queries)."""
    check_query(con, sql)
    values = bind(sql, params)
    try:
        with bounded(con, limits):
            rel = con.sql(sql, params=values)
            return _fetch(rel, limits) if rel is not None else pa.table({})
    except duckdb.PermissionException as err:
        raise QueryRefused(f"refused by DuckDB's read-only mode (external access is off: only "
                           f"the tables data, filtered, rejected and manifest can be read): "
                           f"{err}") from None


def check_output_path(out: str | os.PathLike) -> None:
    """Refuse to write a result inside a published version (versions are immutable, and file
    permissions do not stop root)."""
    for folder in Path(out).expanduser().resolve().parents:
        if re.fullmatch(r"v[0-9]+", folder.name) and (folder / versions.MANIFEST).is_file():
            raise AnalysisError(f"refused: {out} is inside the published version {folder}; "
                                "versions are read-only, write the result elsewhere")


def run_query(version_dir: str | os.PathLike, sql: str,
              params: Mapping[str, Any] | None = None, limits: Limits | None = None) -> pa.Table:
    """Run one SQL query over a version's views (see the module docstring), under `limits`
    (default `Limits()`)."""
    limits = limits or Limits()
    con = open_version(version_dir, limits=limits)
    try:
        return execute(con, sql, params, limits)
    finally:
        con.close()


def run_file(version_dir: str | os.PathLike, file: str, **params: Any) -> pa.Table:
    """Run a query file (a path or a name under sql/analysis/) over a version."""
    return run_query(version_dir, load_sql(file)[1], params)


# -- diff ----------------------------------------------------------------------------------

def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted.key.path: leaf}; lists are leaves (compared whole)."""
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Changed leaves as {key, old, new, change: changed|added|removed}, sorted by key."""
    a, b = flatten(dict(old or {})), flatten(dict(new or {}))
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va != vb:
            change = "added" if va is _ABSENT else "removed" if vb is _ABSENT else "changed"
            out.append({"key": key, "old": None if va is _ABSENT else va,
                        "new": None if vb is _ABSENT else vb, "change": change})
    return out


def diff(version_a: str | os.PathLike, version_b: str | os.PathLike,
         limits: Limits | None = None) -> dict[str, Any]:
    """What changed from version a to b: rows by id, label distribution, config; its DuckDB
    work under `limits` (None: DuckDB's defaults)."""
    dirs = [Path(version_a), Path(version_b)]
    manifests = [versions.read_manifest(d) for d in dirs]
    con = duckdb.connect(":memory:", config=limits.config() if limits else {})
    try:
        with bounded(con, limits, "the diff"):
            for name, d in zip(("a", "b"), dirs):
                con.sql("select id, label from read_parquet($paths)",
                        params={"paths": sorted(str(p) for p in (d / "data").glob("*.parquet"))}
                        ).create_view(name)
            changes = con.sql("""
                select coalesce(b.id, a.id) as id, a.label as old_label, b.label as new_label,
                       case when a.id is null then 'added' when b.id is null then 'removed'
                            when a.label <> b.label then 'relabelled' else 'unchanged' end as change
                from a full outer join b on a.id = b.id
                order by id""").fetchall()
            dist = con.sql("""
                select label, count(*) filter (where side = 'a') as a,
                       count(*) filter (where side = 'b') as b
                from (select label, 'a' as side from a union all select label, 'b' from b)
                group by label""").fetchall()
    finally:
        con.close()

    rows = {c: 0 for c in ("added", "removed", "relabelled", "unchanged")}
    ids: dict[str, list] = {"added": [], "removed": [], "relabelled": []}
    for id_, old, new, change in changes:
        rows[change] += 1
        if change == "relabelled":
            ids[change].append({"id": id_, "old": old, "new": new})
        elif change != "unchanged":
            ids[change].append(id_)
    size = {"a": sum(r[1] for r in dist), "b": sum(r[2] for r in dist)}
    order = {l: i for i, l in enumerate(manifests[1].get("labels") or manifests[0].get("labels") or [])}
    labels = [{"label": label, "a": na, "b": nb, "delta": nb - na,
               "share_a": na / size["a"] if size["a"] else None,
               "share_b": nb / size["b"] if size["b"] else None}
              for label, na, nb in sorted(dist, key=lambda r: (order.get(r[0], len(order)), r[0]))]
    return {"a": {"ref": version_ref(dirs[0]), "path": str(dirs[0]), "rows": size["a"]},
            "b": {"ref": version_ref(dirs[1]), "path": str(dirs[1]), "rows": size["b"]},
            "rows": rows, "ids": ids, "labels": labels,
            "config": config_diff(manifests[0].get("config"), manifests[1].get("config"))}


# -- label issues (cleanlab) ---------------------------------------------------------------

ISSUES_SCHEMA = pa.schema([
    ("id", pa.string()), ("gold_label", pa.string()), ("teacher_label", pa.string()),
    ("teacher_confidence", pa.float64()), ("label_quality", pa.float64()),
    ("is_label_issue", pa.bool_()), ("text", pa.string())])


def label_issues(version_dir: str | os.PathLike, all_rows: bool = False,
                 limits: Limits | None = None) -> pa.Table:
    """Seed rows whose gold label cleanlab flags, worst first (all seed rows with `all_rows`);
    reading them under `limits` (None: DuckDB's defaults).

    cleanlab's confident learning (`cleanlab.filter.find_label_issues`, default
    prune_by_noise_rate) needs OUT-OF-SAMPLE predicted probabilities. We use the teacher's
    label_probs on the seed rows: the teacher is never trained on them (they are held-out
    human labels it only scores), so they qualify. A teacher fine-tuned on the seed set would
    break that assumption and hide issues. `label_quality` is cleanlab's self-confidence
    score (the teacher's probability of the gold label); lower is more suspect.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    vdir = Path(version_dir)
    labels = versions.read_manifest(vdir).get("labels") or []
    con = open_version(vdir, load=False, limits=limits)  # the seed rows only, not the version
    try:
        with bounded(con, limits, "reading the seed rows"):
            seed = con.sql("select id, gold_label, teacher_label, teacher_confidence, label_probs, "
                           "text from data where source = 'seed' and gold_label is not null "
                           "order by id").fetchall()
    finally:
        con.close()
    if not seed:
        return ISSUES_SCHEMA.empty_table()
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[r[1]] for r in seed])
    probs = np.array([r[4] for r in seed], dtype=np.float64)
    probs /= probs.sum(axis=1, keepdims=True)  # float32 rounding: cleanlab wants rows summing to 1
    with warnings.catch_warnings():  # "too few examples in class k" on small seed sets
        warnings.simplefilter("ignore")
        flagged = find_label_issues(y, probs)
        quality = get_label_quality_scores(y, probs)
    rows = [{"id": r[0], "gold_label": r[1], "teacher_label": r[2],
             "teacher_confidence": float(r[3]), "label_quality": float(q),
             "is_label_issue": bool(f), "text": r[5]}
            for r, q, f in zip(seed, quality, flagged) if all_rows or f]
    rows.sort(key=lambda r: (r["label_quality"], r["id"]))
    return pa.Table.from_pylist(rows, schema=ISSUES_SCHEMA)
