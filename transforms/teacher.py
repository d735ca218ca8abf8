"""Teacher label scoring inside Beam's RunInference, with our own ModelHandler."""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from models.teacher import label_stats, normalise
from models.teacher_setup import LabelledTeacher, TeacherSetup
from potstill.records import Record

log = logging.getLogger(__name__)


class TeacherModelHandler(ModelHandler[Record, Record, LabelledTeacher]):
    """Loads the teacher once per worker (the driver's `TeacherSetup`: prompt, demonstrations
    and the calibration it fitted) and adds the teacher's columns to batches of Records.

    Batches from Beam are sorted by length inside `score_labels`, so the handler asks for
    batches several times the forward batch size to give the sort room to work.
    """

    def __init__(self, setup: TeacherSetup, *, keep_raw: bool = False,
                 expected_rows: int | None = None, progress_every_s: float = 15.0):
        super().__init__()
        self.setup, self.keep_raw = setup, keep_raw
        self.expected_rows = expected_rows
        self.progress_every_s = progress_every_s
        self._done, self._busy, self._last_log = 0, 0.0, time.perf_counter()

    def load_model(self) -> LabelledTeacher:
        start = time.perf_counter()
        teacher = self.setup.load()
        log.info("teacher ready (%s) in %.1fs", self.setup.model_path, time.perf_counter() - start)
        return teacher

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.setup.batch_size * 4}

    def run_inference(self, batch: Sequence[Record], model: LabelledTeacher,
                      inference_args: dict | None = None) -> Iterable[Record]:
        start = time.perf_counter()
        raw, calibrated = model.score_records(batch)
        stats = label_stats(calibrated, list(self.setup.labels))
        if self.keep_raw:
            for row, probs in zip(stats, normalise(raw)):
                row["label_probs_raw"] = probs.astype("float32").tolist()
        self._progress(len(batch), time.perf_counter() - start)
        return [r.with_values(**s) for r, s in zip(batch, stats)]
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


def failed_rows(failure) -> list[dict]:
    """A batch the teacher could not score: every row goes to rejected with the error."""
    batch, exc = failure
    return [{"source": r.source, "input_ref": r.input_ref, "reason": "teacher_error",
             "detail": f"{type(exc).__name__}: {exc}"[:500], "raw": r.text[:2000]} for r in batch]


class ScoreWithTeacher(beam.PTransform):
    """Records -> Records with the teacher's columns (`scored`) and rejected rows (`rejected`)."""

    def __init__(self, handler: TeacherModelHandler):
        super().__init__()
        self.handler = handler

    def expand(self, records):
        scored, errors = records | "RunInference" >> RunInference(self.handler).with_exception_handling()
        rejected = errors.failed_inferences | "FailedBatches" >> beam.FlatMap(failed_rows)
        return {"scored": scored, "rejected": rejected}
