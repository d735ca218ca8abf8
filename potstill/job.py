"""The library side of a run, called by the driver (beam_pipelines/pipeline.py): what it will read
(the plan and its fingerprint), and what happens to the staged shards afterwards (curate with
DuckDB, validate, publish a version). Imports nothing from models/ or transforms/: the driver
resolves the models and passes them in.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

import potstill
from potstill.publish import contract, curation, expectations, versions
from potstill import memory, store
from potstill.config.core import Config
from potstill.rows.records import HashingReader, expand, file_format, iter_rows, parquet_footer
from potstill.reports.report import write_version_report

log = logging.getLogger(__name__)


ROLES = ("teacher", "generator", "student", "ta")
BATCH_ROWS = 50_000       # rows per batch written to a version's files
DUCKDB_MEMORY = "256MB"   # the curation's buffer; past it DuckDB spills under the staging folder


@dataclass(frozen=True)
class Plan:
    inputs: dict[str, list[dict]]     # split -> [{path, sha256, bytes, rows}]
    code_version: str
    fingerprint: str
    # role -> the resolved model (name, path, sha256, source): the teacher always; the generator
    # when generation is on (may be the teacher), the warm-up student and the TA with signals
    models: Mapping[str, Any]

    @property
    def teacher(self):
        return self.models["teacher"]

    @property
    def generator(self):
        return self.models.get("generator")

    @property
    def student(self):
        return self.models.get("student")

    @property
    def ta(self):
        return self.models.get("ta")

    def expected_rows(self, cfg: Config) -> int:
        """At most how many rows reach the teacher (for its progress estimate)."""
        seed = sum(f["rows"] for f in self.inputs.get("seed", []))
        rows = seed + sum(f["rows"] for f in self.inputs.get("unlabeled", []))
        if cfg.generation.enabled:
            rows += cfg.generation.per_label * len(cfg.task.labels)
        if cfg.budget.teacher_calls is not None:
            rows = min(rows, cfg.budget.teacher_calls + seed)
        return rows


def _file_digest(path: str) -> dict:
    """SHA-256, size and row count of one input file (rows feed the progress estimate), in one
    pass over its bytes: the rows are parsed from the stream being hashed; a Parquet file's
    count is in its footer."""
    with fsspec.open(path, "rb") as fh:
        if file_format(path) == "parquet":
            rows = parquet_footer(fh).num_rows
            stream = HashingReader(fh)
        else:
            stream = HashingReader(fh)
            rows = sum(1 for _ in iter_rows(io.BufferedReader(stream, 1 << 20), path))
        stream.drain()  # whatever the parser left unread still counts in the hash
    return {"path": path, "sha256": stream.sha.hexdigest(), "bytes": stream.hashed, "rows": rows}


def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{potstill.__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return potstill.__version__


def model_roles(cfg: Config) -> dict[str, str]:
    """role -> model name, for the roles this config uses."""
    roles = {"teacher": cfg.teacher.model}
    if cfg.generation.enabled:
        roles["generator"] = cfg.generation.model or cfg.teacher.model
    if cfg.signals.enabled:
        roles["student"] = cfg.student.model
        if cfg.signals.ta_model:
            roles["ta"] = cfg.signals.ta_model
    return roles


def plan(cfg: Config, models: Mapping[str, Any],
         inputs: Mapping[str, list[dict]] | None = None) -> Plan:
    """Hash every input file; the fingerprint identifies the would-be version. `models` maps
    each of `model_roles(cfg)` to its resolved model (anything with name, source, sha256);
    `inputs` (split -> digests) when a reader hashed the files already (`potstill plan`)."""
    if inputs is None:
        inputs = {split: [_file_digest(p) for p in expand(src.path)]
                  for split in ("unlabeled", "seed", "test")
                  if (src := getattr(cfg.corpus, split)) is not None}
    code = code_version()
    _, sql = curation.load_query(cfg.curation.query)  # its text, not its path: an edit counts
    payload = {"config": cfg.digest(), "teacher": models["teacher"].sha256,
               "curation_sql": hashlib.sha256(sql.encode()).hexdigest(),
               "inputs": {k: [f["sha256"] for f in v] for k, v in inputs.items()},
               "code": potstill.__version__}
    for role in ROLES[1:]:
        if role in models:
            payload[role] = models[role].sha256
    fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return Plan(dict(inputs), code, fingerprint, dict(models))


# Rejections that say nothing about the row: a rerun retries them (the store answers the rest).
RETRIED_REASONS = ("teacher_error",)


def existing_version(cfg: Config, plan: Plan) -> Path | None:
    """The version this run would publish again, if any. A version with rows the teacher did
    not answer (a failed call) is never taken as done: the rerun asks the teacher again for
    those rows only, and publishes a new version only if that changes the result (`finish`
    with `retrying`: `same_result`)."""
    found = versions.find_by_fingerprint(cfg.output_root, cfg.dataset, plan.fingerprint)
    if found is None:
        return None
    rejected = versions.read_manifest(found).get("counts", {}).get("rejected", {})
    retry = {reason: n for reason, n in rejected.items() if reason in RETRIED_REASONS and n}
    if retry:
        log.warning("%s has rows the teacher did not answer (%s): running again to retry them",
                    found, ", ".join(f"{r}: {n}" for r, n in retry.items()))
        return None
    return found


# A pool whose teacher labels put more than this share on one label, where the gold rows put
# clearly less (see label_collapse), has collapsed.
COLLAPSE_SHARE = 0.9


def label_collapse(staging: Path, gold_labels: Sequence[str], min_rows: int,
                   max_share: float | None = None) -> dict | None:
    """The staged pool labelled almost all one class when the gold rows are not: the teacher's
    most common label on the non-seed rows holds more than `max_share` of them, by default
    max(COLLAPSE_SHARE, g + 0.8 (1 - g)) with g the gold rows' largest class share (a pool
    may lean further than its gold rows, but not to nearly all one class). Checked from
    `min_rows` teacher-labelled rows on, and only with gold rows (or an explicit max_share)."""
    files = staged_files(staging, "scored")
    if not files or (not gold_labels and max_share is None):
        return None
    con = duckdb.connect(":memory:")
    try:
        rows = con.execute("select teacher_label, count(*) from read_parquet($files) "
                           "where source <> 'seed' group by 1 order by 2 desc, 1",
                           {"files": files}).fetchall()
    finally:
        con.close()
    n = sum(k for _, k in rows)
    if n < min_rows or not rows:
        return None
    top, k = rows[0]
    gold = max(Counter(gold_labels).values()) / len(gold_labels) if gold_labels else 0.0
    limit = max_share if max_share is not None else max(COLLAPSE_SHARE, gold + 0.8 * (1 - gold))
    if k / n <= limit:
        return None
    return {"label": top, "share": round(k / n, 4), "rows": n, "limit": round(limit, 4),
            "gold_share": round(gold, 4),
            "why": f"label collapse: the teacher labelled {k} of {n} pool rows {top!r} "
                   f"({k / n:.2f} > {limit:.2f}), where the largest gold class holds {gold:.2f}"}


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        stream = HashingReader(fh)
        stream.drain()
    return stream.sha.hexdigest()


REJECTED_SAME = ["source", "input_ref", "reason", "raw"]  # not `detail`: a timeout's wording varies


def same_result(prepared: Path, version: Path) -> bool:
    """The prepared files hold what `version` holds: the same published, filtered and teacher
    key files, byte for byte (the writers are deterministic), and the same rejected rows for
    the same reasons (`REJECTED_SAME`)."""
    for rel in versions.DATA_FILES:
        if rel.name == "rejected.parquet":
            continue
        mine, theirs = prepared / rel, version / rel
        if mine.is_file() != theirs.is_file() or (mine.is_file() and _sha256(mine) != _sha256(theirs)):
            return False
    order = [(c, "ascending") for c in REJECTED_SAME]
    rejected = [pq.read_table(folder / "rejected.parquet", columns=REJECTED_SAME).sort_by(order)
                for folder in (prepared, version)]
    return rejected[0].equals(rejected[1])


def staged_files(staging: Path, name: str) -> list[str]:
    return sorted(str(p) for p in staging.glob(f"{name}*.parquet"))


def read_staged(staging: Path, name: str, schema: pa.Schema,
                columns: Sequence[str] | None = None) -> pa.Table:
    """The staged shards of `name` as one table, only `columns` when given (the driver's own
    reads: budget rounds, the student's retraining, the saliency sample); the publish path
    streams instead (`finish`)."""
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns if c in schema.names])
    tables = [pq.read_table(f, schema=schema, columns=schema.names) for f in staged_files(staging, name)]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _register(con: duckdb.DuckDBPyConnection, view: str, staging: Path, name: str,
              schema: pa.Schema) -> None:
    """A view over the staged shards of `name` (none: an empty table of `schema`)."""
    files = staged_files(staging, name)
    if files:  # the path list is bound: file names never become SQL text
        con.sql("select * from read_parquet($paths)", params={"paths": files}).create_view(view)
    else:
        con.register(view, schema.empty_table())


def write_query(con: duckdb.DuckDBPyConnection, sql: str, schema: pa.Schema, path: Path,
                batch_rows: int | None = None) -> None:
    """Stream a query's rows into one Parquet file of `schema`, a batch at a time."""
    reader = con.sql(sql).to_arrow_reader(batch_rows or BATCH_ROWS)
    with pq.ParquetWriter(path, schema) as writer:
        for batch in reader:
            writer.write_table(contract.conform(pa.Table.from_batches([batch]), schema))


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f'"{name}"' for name in contract.column_names(schema))


def _by(con: duckdb.DuckDBPyConnection, sql: str) -> dict:
    return dict(sorted(con.execute(sql).fetchall()))


def counts(con: duckdb.DuckDBPyConnection) -> dict:
    """Rows read (staged scored + filtered before the teacher + rejected) against where they went
    (published + every filtered row + rejected); curation splits the staged rows, so a row it
    filters is read once, as staged. Over the views of `finish`, in SQL."""
    out = {"read": _by(con, "select source, count(*) from (select source from staged union all "
                            "select source from early_filtered union all select source from rejected) "
                            "group by source"),
           "rejected": _by(con, "select reason, count(*) from rejected group by reason"),
           "filtered": _by(con, "select filter_reason, count(*) from all_filtered group by filter_reason"),
           "published": _by(con, "select source, count(*) from curated where filter_reason is null "
                                 "group by source")}
    total = sum(out["read"].values())
    published, filtered, rejected = (sum(out[k].values()) for k in ("published", "filtered", "rejected"))
    if total != published + filtered + rejected:  # a bug, never bad input: refuse to publish a version that loses rows
        raise AssertionError(f"row counts do not reconcile: read {total}, "
                             f"accounted {published + filtered + rejected}")
    out["totals"] = {"read": total, "published": published, "rejected": rejected, "filtered": filtered}
    return out


def prepare_version(cfg: Config, staging: Path, out: Path, driver_keys: Sequence[str] = ()):
    """Curate the staged shards with DuckDB and stream the version's files into `out` (laid out
    as a version: versions.DATA_FILES); returns (curation result, counts). Nothing here holds a
    whole table: DuckDB reads the shards, keeps the curated rows in its own database under the
    staging folder (spilling to disk past `DUCKDB_MEMORY`) and the files are written by batch."""
    optional = contract.optional_columns(cfg)
    scored, filtered = (contract.with_labels(s, cfg.task.labels)  # the label order travels with the file
                        for s in (contract.scored_schema(optional), contract.filtered_schema(optional)))
    (out / "data").mkdir(parents=True)
    con = duckdb.connect(str(staging / "curation.duckdb"))
    try:
        con.execute(f"set memory_limit = '{DUCKDB_MEMORY}'")
        _register(con, "staged", staging, "scored", scored)
        _register(con, "early_filtered", staging, "filtered", filtered)
        _register(con, "rejected", staging, "rejected", contract.REJECTED_SCHEMA)
        _register(con, "staged_keys", staging, "keys", store.KEYS_SCHEMA)
        con.register("driver_keys", pa.table({"key": list(driver_keys)}, schema=store.KEYS_SCHEMA))
        curation.lock_down(con, [staging])  # the user's curation SQL reads the staged rows only
        curated = curation.run_query(con, cfg.task.labels, cfg.curation)
        # Filtered before the teacher first, then by the curation (as staged, by id).
        con.execute(f"create view all_filtered as select {_columns(filtered)}, 0 as _part from "
                    f"early_filtered union all select {_columns(filtered)}, 1 from curated "
                    "where filter_reason is not null")
        write_query(con, curation.CURATED_PUBLISHED, scored, out / versions.DATA_FILE)
        write_query(con, "select * from all_filtered order by _part, id, filter_reason, source, text",
                    filtered, out / "filtered.parquet")
        write_query(con, "select * from rejected order by source, input_ref, reason, detail",
                    contract.REJECTED_SCHEMA, out / "rejected.parquet")
        write_query(con, "select distinct key from (select key from staged_keys union all "
                         "select key from driver_keys) order by key",
                    store.KEYS_SCHEMA, out / "teacher_keys.parquet")
        return curated, counts(con)
    finally:
        con.close()


def finish(cfg: Config, plan: Plan, staging: Path, teacher_audit: dict,
           throughput: dict | None = None, extra: dict | None = None,
           driver_keys: Sequence[str] = (), retrying: Path | None = None) -> Path:
    """Curate, validate and publish the staged shards; a failed suite publishes nothing.
    `driver_keys`: teacher-store keys the driver's own scoring used (the audit). `retrying`:
    the version of the same inputs whose teacher_error rows this run asked again for; when
    they failed again and nothing else changed (`same_result`), that version is the result
    and nothing new is published."""
    out = staging / "version"
    try:
        curated, row_counts = prepare_version(cfg, staging, out, driver_keys)
    except (duckdb.IOException, OSError) as err:  # a full disk's errors name no file: name the folder
        raise OSError(f"the curation cannot write its files in {staging} "
                      f"({type(err).__name__}: {err})") from None
    if retrying is not None and same_result(out, retrying):
        failing = sum(n for r, n in row_counts["rejected"].items() if r in RETRIED_REASONS)
        log.info("unchanged: the rows retried in the teacher failed again and nothing else changed "
                 "since %s: nothing new published", retrying)
        log.warning("%d row%s still fail%s in the teacher (their errors: %s)", failing,
                    "s" if failing != 1 else "", "" if failing != 1 else "s",
                    retrying / "rejected.parquet")
        return retrying
    memory.release()  # each stage starts from what is live, not the last one's high-water mark
    v = cfg.validation
    report = expectations.validate_file(out / versions.DATA_FILE, cfg.task.labels, v.min_rows,
                                        v.max_label_share, v.label_share_min_rows, v.chunk_rows)
    memory.release()
    report.raise_if_failed()

    manifest = {
        "dataset": cfg.dataset,
        "labels": cfg.task.labels,
        "fingerprint": plan.fingerprint,
        "config": cfg.model_dump(mode="json"),
        "config_digest": cfg.digest(),
        "code_version": plan.code_version,
        "inputs": plan.inputs,
        "models": {role: {"name": m.name, "source": m.source, "sha256": m.sha256}
                   for role, m in plan.models.items()},
        "counts": row_counts,
        "teacher_audit": teacher_audit,
        "throughput": throughput or {},
        "curation": {"query": curated.query_path, "sql": curated.sql, "params": curated.params},
        "validation": {"success": report.success, "results": report.results},
        **(extra or {}),
    }
    path = versions.publish(cfg.output_root, cfg.dataset, manifest=manifest, prepared=out,
                            render=write_version_report)
    log.info("published %s: %s", path, manifest["counts"]["totals"])
    return path
