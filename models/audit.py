"""Set up the teacher as configured (prompt style, verbalizers, demonstrations, calibration) and
audit it on the gold seed rows before any budget is spent on the pool.

The audit scores every seed row with the same prompt the pool will get; demonstrations are
drawn from the other seed rows (leave-one-out), so the figures are out-of-sample for the
prompt. The fitted temperature is in-sample (one scalar, fitted on the same rows): the
calibrated ECE is therefore optimistic on small seed sets, and the report says so.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from models.calibration import Calibration, contextual_prior, fit_temperature
from models.metrics import classification_metrics
from models.teacher import normalise
from models.teacher_setup import LabelledTeacher, TeacherSetup
from potstill.config import Config
from potstill.records import Record, read_configured

log = logging.getLogger(__name__)


class AuditFailed(ValueError):
    """The teacher is below `audit.min_accuracy` on the gold rows; nothing was labelled."""


def read_seed(cfg: Config) -> list[Record]:
    return read_configured(cfg, "seed")[0] if cfg.corpus.seed is not None else []


def build_teacher(cfg: Config, model_path: str, seeds: list[Record],
                  calibration: Calibration = Calibration(), backend: str | None = None
                  ) -> LabelledTeacher:
    """The configured teacher, loaded (models/teacher_setup.py); `backend` overrides
    cfg.teacher.backend: code that needs the torch model itself (attribution) asks for "hf"."""
    return TeacherSetup.from_config(cfg, model_path, seeds, calibration).load(backend)


def fit_calibration(cfg: Config, lt: LabelledTeacher, seed_raw: np.ndarray,
                    gold: np.ndarray) -> Calibration:
    mode = cfg.teacher.calibration
    prior = None
    if "contextual" in mode:
        inputs = list(cfg.teacher.content_free_inputs)
        prior = contextual_prior(lt.score(inputs)[0])
    temperature = 1.0
    if "temperature" in mode:
        temperature = fit_temperature(Calibration(prior).apply(seed_raw), gold)
    return Calibration(prior, temperature)


def audit(cfg: Config, lt: LabelledTeacher, seeds: list[Record]) -> dict:
    """Score the seed rows, fit the calibration onto `lt`, and report quality before/after."""
    labels = cfg.task.labels
    report = {"n": len(seeds), "prompt_style": cfg.teacher.prompt_style,
              "few_shot": cfg.teacher.few_shot.model_dump(), "calibration_mode": cfg.teacher.calibration}
    if not seeds:
        lt.calibration = fit_calibration(cfg, lt, np.zeros((0, len(labels))), np.zeros(0, int))
        report["calibration"] = lt.calibration.to_json()
        report["note"] = "no seed rows: teacher quality unknown"
        return report
    gold = np.array([labels.index(r.gold_label) for r in seeds])
    start = time.perf_counter()
    raw, _ = lt.score_records(seeds)
    report["rows_per_second"] = round(len(seeds) / (time.perf_counter() - start), 3)
    lt.calibration = fit_calibration(cfg, lt, raw, gold)
    for name, probs in (("raw", normalise(raw)), ("calibrated", np.exp(lt.calibration.apply(raw)))):
        report[name] = classification_metrics(gold.tolist(), probs.argmax(1).tolist(), labels,
                                              probs=probs)
    report["calibration"] = lt.calibration.to_json()
    report["accuracy"] = report["calibrated"]["accuracy"]
    report["temperature_in_sample"] = "temperature" in cfg.teacher.calibration
    return report


def check(cfg: Config, report: dict) -> None:
    floor = cfg.audit.min_accuracy
    if floor is not None and report.get("accuracy") is not None and report["accuracy"] < floor:
        raise AuditFailed(
            f"teacher accuracy on the {report['n']} gold seed rows is {report['accuracy']:.3f}, "
            f"below audit.min_accuracy={floor}: stopped before labelling the pool. Try "
            "teacher.few_shot.k, teacher.calibration, teacher.verbalizers or a stronger teacher.model.")
