"""Set up the teacher as configured (prompt style, verbalizers, demonstrations, calibration) and
audit it on the gold seed rows before any budget is spent on the pool.

`tune_and_gate` is the driver's single entry point: with at least `audit.min_seed_rows` gold
rows it searches the teacher setup (models/quality/tuning.py), audits the chosen one and applies the
quality gate (models/quality/gate.py); with fewer it audits the configured setup only.

The audit scores every seed row with the same prompt the pool will get; demonstrations are
drawn from the other seed rows (leave-one-out), so the figures are out-of-sample for the
prompt. The fitted temperature is in-sample (one scalar, fitted on the same rows): the
calibrated ECE is therefore optimistic on small seed sets, and the report says so.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from potstill.models.teacher.calibration import Calibration, contextual_prior, fit_temperature
from potstill.models.quality.gate import AuditFailed, WeakTeacher  # noqa: F401 (part of this module's API)
from potstill.models.metrics import classification_metrics
from potstill.models.teacher.hf import normalise
from potstill.models.teacher.teacher_setup import LabelledTeacher, TeacherSetup
from potstill.config.core import Config, Task, Teacher
from potstill.config.quality import Audit, AuditSearch
from potstill.rows.records import Record, read_configured

log = logging.getLogger(__name__)


def read_seed(cfg: Config) -> list[Record]:
    return read_configured(cfg, "seed")[0] if cfg.corpus.seed is not None else []


def search_embedder(t: Teacher, search: AuditSearch, task: Task, lt: LabelledTeacher):
    """The demonstration embedder the setup search needs (few-shot k > 0 with similar
    demonstrations), shared per process; None when it needs none."""
    from potstill.models.quality.tuning import grid

    if lt.selector and lt.selector.embed:
        return lt.selector.embed
    if not (any(grid(t, search, task)[1]) and t.few_shot.selection == "similar"):
        return None
    from potstill.models.embed import Embedder
    from potstill.models.loading import shared
    from potstill.models.registry import resolve_model

    path = resolve_model(t.few_shot.embedder).path
    return shared(("embedder", path), lambda: Embedder(path))


def build_teacher(cfg: Config, model_path: str, seeds: list[Record],
                  calibration: Calibration = Calibration(), backend: str | None = None
                  ) -> LabelledTeacher:
    """The configured teacher, loaded (models/teacher/teacher_setup.py); `backend` overrides
    cfg.teacher.backend: code that needs the torch model itself (attribution) asks for "hf"."""
    return TeacherSetup.from_config(cfg, model_path, seeds, calibration).load(backend)


def fit_calibration(t: Teacher, lt: LabelledTeacher, seed_raw: np.ndarray,
                    gold: np.ndarray) -> Calibration:
    """`teacher.calibration` fitted: the contextual prior from `teacher.content_free_inputs`,
    the temperature on the seed rows."""
    mode = t.calibration
    prior = None
    if "contextual" in mode:
        prior = contextual_prior(lt.score(list(t.content_free_inputs))[0])
    temperature = 1.0
    if "temperature" in mode:
        temperature = fit_temperature(Calibration(prior).apply(seed_raw), gold)
    return Calibration(prior, temperature)


def audit(t: Teacher, labels: list[str], lt: LabelledTeacher, seeds: list[Record]) -> dict:
    """Score the seed rows, fit the calibration onto `lt`, and report quality before/after."""
    if not seeds:
        lt.calibration = fit_calibration(t, lt, np.zeros((0, len(labels))), np.zeros(0, int))
        return {**_setup(t), "calibration": lt.calibration.to_json(),
                "note": "no seed rows: teacher quality unknown"}
    return _audit(t, labels, lt, seeds)[0]


def _audit(t: Teacher, labels: list[str], lt: LabelledTeacher, seeds: list[Record]
           ) -> tuple[dict, np.ndarray]:
    """`audit` on seed rows, also returning the calibrated arg-max per seed row."""
    gold = np.array([labels.index(r.gold_label) for r in seeds])
    start = time.perf_counter()
    raw, _ = lt.score_records(seeds)
    seconds = time.perf_counter() - start
    lt.calibration = fit_calibration(t, lt, raw, gold)
    return (quality_report(t, labels, raw, gold, lt.calibration, seconds),
            lt.calibration.apply(raw).argmax(1))


def _setup(t: Teacher, n: int = 0) -> dict:
    return {"n": n, "prompt_style": t.prompt_style, "verbalizers": t.verbalizers,
            "few_shot": t.few_shot.model_dump(), "calibration_mode": t.calibration}


def quality_report(t: Teacher, labels: list[str], raw: np.ndarray, gold: np.ndarray,
                   calibration: Calibration, seconds: float) -> dict:
    """Accuracy, macro-F1, per-class recall and ECE on the seed rows, raw and calibrated."""
    report = _setup(t, len(gold))
    report["rows_per_second"] = round(len(gold) / max(seconds, 1e-9), 3)
    for name, probs in (("raw", normalise(raw)), ("calibrated", np.exp(calibration.apply(raw)))):
        report[name] = classification_metrics(gold.tolist(), probs.argmax(1).tolist(), labels,
                                              probs=probs)
    report["calibration"] = calibration.to_json()
    report["accuracy"] = report["calibrated"]["accuracy"]
    report["temperature_in_sample"] = "temperature" in t.calibration
    return report


def tune_and_gate(cfg: Config, setup: TeacherSetup, seeds: list[Record], judge: Audit | None = None
                  ) -> tuple[TeacherSetup, dict]:
    """Search the teacher setup on the gold rows, audit it, and stop a weak teacher before it
    labels the pool. Returns the setup the pool is labelled with (`setup` with the chosen
    prompt, verbalizers, demonstrations and the fitted calibration; its model, store and thread
    share unchanged) and the manifest's `teacher_audit`. `judge` replaces `cfg.audit` (the
    teacher's evaluation judges but never stops)."""
    from potstill.models.quality import gate, tuning

    a, t, task = judge or cfg.audit, cfg.teacher, cfg.task
    if not seeds and t.calibration == "none":
        return setup, {"n": 0, "note": "no seed rows: teacher quality unknown"}
    labels = task.labels
    gold = np.array([labels.index(r.gold_label) for r in seeds], dtype=int)
    judged = len(seeds) >= a.min_seed_rows
    lt = setup.load()  # weights shared per process (models/loading.py)
    if not (judged and a.search.enabled):
        report, pred = _audit(t, labels, lt, seeds) if seeds else (audit(t, labels, lt, seeds), None)
        tuned = setup.with_calibration(lt.calibration)
    else:
        result = tuning.search(t, a, task, lt.teacher, seeds, search_embedder(t, a.search, task, lt),
                               store=lt)
        chosen_t = t.model_copy(update=result.teacher_update(t))
        chosen = result.chosen
        calibration = Calibration(chosen.prior)
        if "temperature" in chosen_t.calibration:
            calibration = Calibration(chosen.prior, fit_temperature(calibration.apply(chosen.raw), gold))
        tuned = setup.tuned(chosen_t, calibration)
        report = quality_report(chosen_t, labels, chosen.raw, gold, calibration,
                                result.seconds / max(result.prompt_passes, 1))
        report["search"] = tuning.report(result, gold, labels)
        pred = result.cv_pred
    report["teacher_usage"] = {"calls": lt.calls, "cache_hits": lt.cache_hits}
    if hasattr(lt.teacher, "take_usage"):  # a remote teacher's requests (models/teacher/remote.py)
        report["remote_usage"] = dict(lt.teacher.take_usage())
    report["store_keys"] = sorted(set(lt.used_keys))  # into teacher_keys.parquet, not the manifest
    lt.close()  # a vLLM engine ends here (the workers build their own); HF weights stay shared
    if not judged:
        report["gate"] = {"weak": None, "note": f"{len(seeds)} gold rows < audit.min_seed_rows="
                          f"{a.min_seed_rows}: the teacher was neither tuned nor judged"}
        log.warning("the quality gate is skipped: %s", report["gate"]["note"])
    else:
        gold_pred = None
        if a.compare_gold and task.kind == "classification":
            gold_pred = gate.gold_classifier_cv(cfg.student, a, len(labels),
                                                [r.model_input for r in seeds], gold)
        source = ("the setup search's cross-validated predictions" if "search" in report
                  else "the configured setup's predictions")
        report["gate"] = gate.judge(a, labels, gold, pred, gold_pred, source)
    log.info("teacher audit on %d gold rows: accuracy %s%s", len(seeds), report.get("accuracy"),
             f", chose {report['search']['chosen']}" if "search" in report else "")
    check(a, report)
    if judged:
        gate.enforce(a, report["gate"])
    return tuned, report


def check(a: Audit, report: dict) -> None:
    floor = a.min_accuracy
    if floor is not None and report.get("accuracy") is not None and report["accuracy"] < floor:
        raise AuditFailed(
            f"teacher accuracy on the {report['n']} gold seed rows is {report['accuracy']:.3f}, "
            f"below audit.min_accuracy={floor}: stopped before labelling the pool. Try "
            "teacher.few_shot.k, teacher.calibration, teacher.verbalizers or a stronger teacher.model.")
