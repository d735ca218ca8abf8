"""The library side of a run, called by the driver (beam_pipelines/pipeline.py): what it will read
(the plan and its fingerprint), and what happens to the staged shards afterwards (curate with
DuckDB, validate, publish a version). Imports nothing from models/ or transforms/: the driver
resolves the models and passes them in.
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

import potstill
from potstill import contract, curation, expectations, store, versions
from potstill.config import Config
from potstill.records import expand, iter_rows
from potstill.report import write_version_report

log = logging.getLogger(__name__)


ROLES = ("teacher", "generator", "student", "ta")


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
    """SHA-256, size and row count of one input file (rows feed the progress estimate)."""
    h, size = hashlib.sha256(), 0
    with fsspec.open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    with fsspec.open(path, "rb") as fh:
        rows = sum(1 for _ in iter_rows(fh, path))
    return {"path": path, "sha256": h.hexdigest(), "bytes": size, "rows": rows}


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


def plan(cfg: Config, models: Mapping[str, Any]) -> Plan:
    """Hash every input file; the fingerprint identifies the would-be version. `models` maps
    each of `model_roles(cfg)` to its resolved model (anything with name, source, sha256)."""
    inputs = {}
    for split in ("unlabeled", "seed", "test"):
        src = getattr(cfg.corpus, split)
        if src is not None:
            inputs[split] = [_file_digest(p) for p in expand(src.path)]
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
    return Plan(inputs, code, fingerprint, dict(models))


def existing_version(cfg: Config, plan: Plan) -> Path | None:
    return versions.find_by_fingerprint(cfg.output_root, cfg.dataset, plan.fingerprint)


def read_staged(staging: Path, name: str, schema: pa.Schema) -> pa.Table:
    files = sorted(str(p) for p in staging.glob(f"{name}*.parquet"))
    tables = [pq.read_table(f, schema=schema) for f in files]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def counts(scored, early_filtered, rejected, published, filtered) -> dict:
    """Rows read (staged scored + filtered before the teacher + rejected) against where they went
    (published + every filtered row + rejected); curation splits the staged rows, so a row it
    filters is read once, as staged."""
    def by(table, column):
        return dict(sorted(Counter(table[column].to_pylist()).items()))

    read = Counter(scored["source"].to_pylist()) + Counter(early_filtered["source"].to_pylist()) \
        + Counter(rejected["source"].to_pylist())
    out = {"read": dict(sorted(read.items())), "rejected": by(rejected, "reason"),
           "filtered": by(filtered, "filter_reason"), "published": by(published, "source")}
    total = sum(read.values())
    accounted = published.num_rows + filtered.num_rows + rejected.num_rows
    if total != accounted:  # a bug, never bad input: refuse to publish a version that loses rows
        raise AssertionError(f"row counts do not reconcile: read {total}, accounted {accounted}")
    out["totals"] = {"read": total, "published": published.num_rows,
                     "rejected": rejected.num_rows, "filtered": filtered.num_rows}
    return out


def finish(cfg: Config, plan: Plan, staging: Path, teacher_audit: dict,
           throughput: dict | None = None, extra: dict | None = None,
           driver_keys: Sequence[str] = ()) -> Path:
    """Curate, validate and publish the staged shards; a failed suite publishes nothing.
    `driver_keys`: teacher-store keys the driver's own scoring used (the audit)."""
    optional = contract.optional_columns(cfg)
    scored = read_staged(staging, "scored", contract.scored_schema(optional))
    early_filtered = read_staged(staging, "filtered", contract.filtered_schema(optional))
    rejected = read_staged(staging, "rejected", contract.REJECTED_SCHEMA)
    labels = cfg.task.labels

    curated = curation.curate(scored, labels, cfg.curation)
    filtered = pa.concat_tables([early_filtered, curated.filtered])
    published = curated.published
    v = cfg.validation
    report = expectations.validate(published, labels, v.min_rows, v.max_label_share, v.label_share_min_rows)
    report.raise_if_failed()

    manifest = {
        "dataset": cfg.dataset,
        "labels": labels,
        "fingerprint": plan.fingerprint,
        "config": cfg.model_dump(mode="json"),
        "config_digest": cfg.digest(),
        "code_version": plan.code_version,
        "inputs": plan.inputs,
        "models": {role: {"name": m.name, "source": m.source, "sha256": m.sha256}
                   for role, m in plan.models.items()},
        "counts": counts(scored, early_filtered, rejected, published, filtered),
        "teacher_audit": teacher_audit,
        "throughput": throughput or {},
        "curation": {"query": curated.query_path, "sql": curated.sql, "params": curated.params},
        "validation": {"success": report.success, "results": report.results},
        **(extra or {}),
    }
    keys = read_staged(staging, "keys", store.KEYS_SCHEMA)["key"].to_pylist() + list(driver_keys)
    path = versions.publish(cfg.output_root, cfg.dataset, published=published,
                            filtered=filtered, rejected=rejected, manifest=manifest,
                            render=write_version_report,
                            teacher_keys=pa.table({"key": sorted(set(keys))}, schema=store.KEYS_SCHEMA))
    log.info("published %s: %s", path, manifest["counts"]["totals"])
    return path
