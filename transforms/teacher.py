"""Teacher label scoring inside Beam's RunInference, with our own ModelHandler."""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from models.audit import LabelledTeacher, build_teacher
from models.calibration import Calibration
from models.signals import signal_columns
from models.teacher import label_stats, normalise
from potstill.config import Config
from potstill.records import Record

log = logging.getLogger(__name__)


class TeacherModelHandler(ModelHandler[Record, PredictionResult, LabelledTeacher]):
    """Loads the teacher once per worker (with its demonstration pool and the calibration the
    driver fitted) and scores batches of Records.

    Batches from Beam are sorted by length inside `score_labels`, so the handler asks for
    batches several times the forward batch size to give the sort room to work.
    """

    def __init__(self, cfg: Config, model_path: str, seeds: Sequence[Record] = (),
                 calibration: Calibration = Calibration(), *, expected_rows: int | None = None,
                 progress_every_s: float = 15.0):
        super().__init__()
        self.cfg, self.model_path, self.seeds = cfg, model_path, list(seeds)
        self.calibration = calibration
        self.labels = list(cfg.task.labels)
        self.batch_size = cfg.teacher.batch_size
        self.keep_raw = cfg.teacher.calibration != "none"
        self.expected_rows = expected_rows
        self.progress_every_s = progress_every_s
        self._done, self._busy, self._last_log = 0, 0.0, time.perf_counter()

    def load_model(self) -> LabelledTeacher:
        start = time.perf_counter()
        teacher = build_teacher(self.cfg, self.model_path, self.seeds, self.calibration)
        log.info("teacher loaded from %s in %.1fs", self.model_path, time.perf_counter() - start)
        return teacher

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.batch_size * 4}

    def run_inference(self, batch: Sequence[Record], model: LabelledTeacher,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        start = time.perf_counter()
        raw, calibrated = model.score_records(batch)
        stats = label_stats(calibrated, self.labels)
        if self.keep_raw:
            for row, probs in zip(stats, normalise(raw)):
                row["label_probs_raw"] = probs.astype("float32").tolist()
        self._progress(len(batch), time.perf_counter() - start)
        return [PredictionResult(r, s) for r, s in zip(batch, stats)]

    def _progress(self, n: int, seconds: float) -> None:
        """Log rows scored and the scoring rate (model time only) every `progress_every_s`."""
        Metrics.counter("potstill", "teacher_scored").inc(n)
        self._done += n
        self._busy += seconds
        now = time.perf_counter()
        if now - self._last_log < self.progress_every_s:
            return
        self._last_log = now
        rate = self._done / max(self._busy, 1e-9)
        if self.expected_rows:  # an upper bound: rejected and duplicate rows never get here
            left = max(self.expected_rows - self._done, 0) / rate
            log.info("teacher: %d of at most %d rows scored (%.1f rows/s, ~%.0f s left)",
                     self._done, self.expected_rows, rate, left)
        else:
            log.info("teacher: %d rows scored (%.1f rows/s)", self._done, rate)

    def get_metrics_namespace(self) -> str:
        return "potstill_teacher"


def scored_row(result: PredictionResult, labels: Sequence[str] = ()) -> dict:
    """A contract row: seed rows keep their gold label as the training target. Optional columns
    are always filled; the writer keeps those of the stages that are on."""
    record, stats = result.example, result.inference
    signals = signal_columns(dict(record.signals), stats["teacher_label"], labels) if record.signals else {}
    return {"id": record.id, "text": record.text,
            "label": record.gold_label if record.source == "seed" else stats["teacher_label"],
            **stats, "gold_label": record.gold_label, "source": record.source, "weight": 1.0,
            "intended_label": record.intended_label,
            "choices": list(record.choices) if record.choices else None, **signals}


def failed_rows(failure) -> list[dict]:
    """A batch the teacher could not score: every row goes to rejected with the error."""
    batch, exc = failure
    return [{"source": r.source, "input_ref": r.input_ref, "reason": "teacher_error",
             "detail": f"{type(exc).__name__}: {exc}"[:500], "raw": r.text[:2000]} for r in batch]


class ScoreWithTeacher(beam.PTransform):
    """Records -> scored contract rows (main) and rejected rows (`rejected`)."""

    def __init__(self, handler: TeacherModelHandler):
        super().__init__()
        self.handler = handler

    def expand(self, records):
        results, errors = records | "RunInference" >> RunInference(self.handler).with_exception_handling()
        scored = results | "ToContractRow" >> beam.Map(scored_row, self.handler.labels)
        rejected = errors.failed_inferences | "FailedBatches" >> beam.FlatMap(failed_rows)
        return {"scored": scored, "rejected": rejected}
