"""Evaluate the teacher on the config's test split, set up exactly as the job uses it (the setup
search on the seed rows, prompt style, verbalizers, demonstrations, calibration fitted on them),
through the job's teacher store: no answer a `run` or an earlier evaluation paid for is asked
again."""
from __future__ import annotations

import logging
import time

import numpy as np

from potstill.models.quality import audit
from potstill.models.metrics import classification_metrics
from potstill.models.registry import ensure_offline, resolve_model
from potstill.models.teacher.backends import open_store
from potstill.models.teacher.hf import normalise
from potstill.models.teacher.teacher_setup import TeacherSetup
from potstill.config.core import Config
from potstill.progress import Progress
from potstill.store import StoreError
from potstill.rows.records import read_configured

log = logging.getLogger(__name__)


def read_test_split(cfg: Config):
    return read_configured(cfg, "test")


def score_with_progress(lt, records, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`lt.score_records` in chunks of a few batches, with a rate-limited progress line (rows
    done/total, rate, ETA): 300 long emails no longer run for minutes in silence."""
    chunk = max(64, 8 * batch_size)
    progress = Progress("evaluate (teacher)", len(records))
    parts = []
    for start in range(0, len(records), chunk):
        parts.append(lt.score_records(records[start:start + chunk]))
        progress.update(len(records[start:start + chunk]))
    if not parts:
        return lt.score_records(records)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def evaluate_teacher(cfg: Config, limit: int | None = None) -> dict:
    ensure_offline()
    records, rejected = read_test_split(cfg)
    records = records[:limit] if limit else records
    seeds = audit.read_seed(cfg)
    spec = resolve_model(cfg.teacher.model)
    if cfg.teacher.backend == "openai":  # scoring resolved as the job resolves it: the store's key
        from potstill.models.teacher.remote_endpoint import resolved_config

        cfg = resolved_config(cfg, spec.path)
    # The job's teacher store: the setup search's answers on the seed rows are read from it (a
    # `run` already paid for them), and the test rows' answers are kept for the next evaluation.
    store = open_store(cfg.output_root, cfg.teacher, spec.sha256)
    try:
        store.check_writable()
    except StoreError as err:  # evaluating only reads the job: go on, asking every answer
        log.warning("%s Evaluating without the store: every answer is asked of the model and "
                    "none is kept.", err)
        store = None
    # The setup the job would label with (search included); evaluating never stops on the gate.
    judge_only = cfg.audit.model_copy(update={"on_weak_teacher": "continue", "min_accuracy": None})
    setup, seed_report = audit.tune_and_gate(
        cfg, TeacherSetup.from_config(cfg, spec.path, seeds, store=store), seeds, judge=judge_only)
    seed_report.pop("store_keys", None)
    lt = setup.load()
    start = time.perf_counter()
    raw, calibrated = score_with_progress(lt, records, cfg.teacher.batch_size)
    seconds = time.perf_counter() - start
    labels = cfg.task.labels
    gold = [labels.index(r.gold_label) for r in records]
    metrics = classification_metrics(gold, calibrated.argmax(1).tolist(), labels,
                                     probs=np.exp(calibrated))
    metrics["raw"] = classification_metrics(gold, raw.argmax(1).tolist(), labels,
                                            probs=normalise(raw))
    metrics.update(model="teacher", teacher=cfg.teacher.model, n_test_rejected=len(rejected),
                   rows_per_second=round(len(records) / max(seconds, 1e-9), 3),
                   seed_audit={k: seed_report.get(k) for k in ("n", "accuracy", "calibration", "gate")},
                   setup=seed_report.get("search", {}).get("chosen"),
                   teacher_usage={"audit": seed_report.get("teacher_usage"),
                                  "test": {"calls": lt.calls, "cache_hits": lt.cache_hits}})
    return metrics
