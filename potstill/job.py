"""The job's glue around the Beam graph: what it will read (the plan), and what happens to the
staged shards afterwards (curate with DuckDB, audit the teacher, validate, publish a version).
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

import potstill
from models.registry import ResolvedModel, ensure_offline, resolve_model
from potstill import contract, curation, expectations, versions
from potstill.config import Config
from potstill.records import expand, iter_rows
from potstill.report import write_version_report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    teacher: ResolvedModel
    inputs: dict[str, list[dict]]     # split -> [{path, sha256, bytes}]
    code_version: str
    fingerprint: str
    generator: ResolvedModel | None = None   # set when generation is on (may be the teacher)
    student: ResolvedModel | None = None     # set when signals are on (the warm-up student)
    ta: ResolvedModel | None = None          # set when signals are on with a TA model


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


def plan(cfg: Config) -> Plan:
    """Resolve models and hash every input file; the fingerprint identifies the would-be version."""
    ensure_offline()
    teacher = resolve_model(cfg.teacher.model)
    generator = None
    if cfg.generation.enabled:
        generator = resolve_model(cfg.generation.model) if cfg.generation.model else teacher
    student = resolve_model(cfg.student.model) if cfg.signals.enabled else None
    ta = resolve_model(cfg.signals.ta_model) if cfg.signals.enabled and cfg.signals.ta_model else None
    inputs = {}
    for split in ("unlabeled", "seed", "test"):
        src = getattr(cfg.corpus, split)
        if src is not None:
            inputs[split] = [_file_digest(p) for p in expand(src.path)]
    code = code_version()
    payload = {"config": cfg.digest(), "teacher": teacher.sha256,
               "inputs": {k: [f["sha256"] for f in v] for k, v in inputs.items()},
               "code": potstill.__version__}
    for role, model in (("generator", generator), ("student", student), ("ta", ta)):
        if model is not None:
            payload[role] = model.sha256
    fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return Plan(teacher, inputs, code, fingerprint, generator, student, ta)


def existing_version(cfg: Config, plan: Plan) -> Path | None:
    return versions.find_by_fingerprint(cfg.output_root, cfg.dataset, plan.fingerprint)


def has_signals(cfg: Config) -> bool:
    """Rows carry the signals columns: the student's (signals.enabled) or the budget's round."""
    return cfg.signals.enabled or cfg.budget.teacher_calls is not None


def optional_columns(cfg: Config) -> list[str]:
    """Optional contract columns the stages switched on by `cfg` add to every scored row."""
    columns = []
    if cfg.task.kind == "multiple_choice":
        columns.append("choices")
    if cfg.teacher.calibration != "none":
        columns.append("label_probs_raw")
    if cfg.generation.enabled:
        columns.append("intended_label")
    if cfg.saliency.enabled:
        columns += ["rationale", "rationale_scores"]
    if has_signals(cfg):
        columns += list(contract.SIGNAL_COLUMNS)
    return columns


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
        raise RuntimeError(f"row counts do not reconcile: read {total}, accounted {accounted}")
    out["totals"] = {"read": total, "published": published.num_rows,
                     "rejected": rejected.num_rows, "filtered": filtered.num_rows}
    return out


def finish(cfg: Config, plan: Plan, staging: Path, teacher_audit: dict,
           throughput: dict | None = None, extra: dict | None = None) -> Path:
    """Curate, validate and publish the staged shards; a failed suite publishes nothing."""
    optional = optional_columns(cfg)
    scored = read_staged(staging, "scored", contract.scored_schema(optional))
    early_filtered = read_staged(staging, "filtered", contract.filtered_schema(optional))
    rejected = read_staged(staging, "rejected", contract.REJECTED_SCHEMA)
    labels = cfg.task.labels

    curated = curation.curate(scored, labels, cfg.curation)
    filtered = pa.concat_tables([early_filtered, curated.filtered])
    published = curated.published
    report = expectations.validate(published, labels, cfg.validation.min_rows)
    if not report.success:
        raise expectations.ValidationFailed(report)

    manifest = {
        "dataset": cfg.dataset,
        "labels": labels,
        "fingerprint": plan.fingerprint,
        "config": cfg.model_dump(mode="json"),
        "config_digest": cfg.digest(),
        "code_version": plan.code_version,
        "inputs": plan.inputs,
        "models": {role: {"name": m.name, "source": m.source, "sha256": m.sha256}
                   for role, m in (("teacher", plan.teacher), ("generator", plan.generator),
                                   ("student", plan.student), ("ta", plan.ta)) if m is not None},
        "counts": counts(scored, early_filtered, rejected, published, filtered),
        "teacher_audit": teacher_audit,
        "throughput": throughput or {},
        "curation": {"query": curated.query_path, "sql": curated.sql, "params": curated.params},
        "validation": {"success": report.success, "results": report.results},
        **(extra or {}),
    }
    if cfg.saliency.enabled:  # the deletion test runs here, on the driver (models/faithfulness.py)
        from models.faithfulness import manifest_entry
        manifest["saliency"] = manifest_entry(cfg, plan.teacher.path, scored, teacher_audit)
    path = versions.publish(cfg.output_root, cfg.dataset, published=published,
                            filtered=filtered, rejected=rejected, manifest=manifest,
                            render=write_version_report)
    log.info("published %s: %s", path, manifest["counts"]["totals"])
    return path
