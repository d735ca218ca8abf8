"""Saliency rationales inside Beam's RunInference, with our own ModelHandler.

Scored contract rows (dicts from `transforms.teacher.scored_row`) come in; the same rows leave
with `rationale` and `rationale_scores` added (models/attribution.py says how they are computed).
A batch whose attribution fails keeps its rows, with both columns null, and is counted
(`saliency_failed`): rationales are optional, the teacher's labels are not lost over them.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from models.attribution import Explainer, explained_labels, model_input
from models.calibration import Calibration
from potstill.config import Config
from potstill.records import Record

log = logging.getLogger(__name__)


def explain_rows(explainer: Explainer, rows: Sequence[dict], explain: str) -> list[dict]:
    """{rationale, rationale_scores} per scored row."""
    n_options = [len(r["choices"]) if r.get("choices") else None for r in rows]
    found = explainer.explain([model_input(r) for r in rows], explained_labels(rows, explain),
                              n_options)
    return [{"rationale": e.rationale, "rationale_scores": e.rationale_scores} for e in found]


class SaliencyModelHandler(ModelHandler[dict, PredictionResult, Explainer]):
    """Loads the teacher once per worker (with the demonstrations and the calibration the teacher
    stage used, so the prompt and the probability explained are the ones that were scored)."""

    def __init__(self, cfg: Config, model_path: str, seeds: Sequence[Record] = (),
                 calibration: Calibration = Calibration()):
        super().__init__()
        self.cfg, self.model_path, self.seeds = cfg, model_path, list(seeds)
        self.calibration = calibration
        self.batch_size = cfg.saliency.batch_size
        self._done, self._busy, self._last_log = 0, 0.0, time.perf_counter()

    @classmethod
    def like(cls, teacher_handler) -> "SaliencyModelHandler":
        """The same model, prompt setup and calibration as a TeacherModelHandler."""
        h = teacher_handler
        return cls(h.cfg, h.model_path, h.seeds, h.calibration)

    def load_model(self) -> Explainer:
        from models.audit import build_teacher

        s, backend = self.cfg.saliency, self.cfg.teacher.backend
        if backend != "hf":
            log.info("teacher backend is %s (no gradients): the saliency stage loads the same "
                     "weights from %s in torch (transformers)", backend, self.model_path)
        start = time.perf_counter()
        lt = build_teacher(self.cfg, self.model_path, self.seeds, self.calibration, backend="hf")
        explainer = Explainer(lt, s.method, top_k=s.top_k, ig_steps=s.ig_steps,
                              batch_size=s.batch_size, internal_batch_size=s.internal_batch_size)
        log.info("saliency (%s) model loaded from %s in %.1fs", s.method, self.model_path,
                 time.perf_counter() - start)
        return explainer

    def batch_elements_kwargs(self) -> dict[str, Any]:
        # several forward batches per call, so sorting by length inside `explain` has room
        return {"min_batch_size": 1, "max_batch_size": self.batch_size * 4}

    def run_inference(self, batch: Sequence[dict], model: Explainer,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        start = time.perf_counter()
        found = explain_rows(model, batch, self.cfg.saliency.explain)
        Metrics.counter("potstill", "saliency_explained").inc(len(batch))
        self._done, self._busy = self._done + len(batch), self._busy + time.perf_counter() - start
        if time.perf_counter() - self._last_log >= 15.0:
            self._last_log = time.perf_counter()
            log.info("saliency: %d rows explained (%.2f rows/s)", self._done, self._done / self._busy)
        return [PredictionResult(r, f) for r, f in zip(batch, found)]

    def get_metrics_namespace(self) -> str:
        return "potstill_saliency"


def with_rationale(result: PredictionResult) -> dict:
    return {**result.example, **result.inference}


def without_rationale(failure) -> list[dict]:
    batch, exc = failure
    log.warning("saliency failed on a batch of %d rows: %s: %s", len(batch), type(exc).__name__, exc)
    Metrics.counter("potstill", "saliency_failed").inc(len(batch))
    return [{**r, "rationale": None, "rationale_scores": None} for r in batch]


class AddRationales(beam.PTransform):
    """Scored rows -> the same rows with `rationale` and `rationale_scores`."""

    def __init__(self, handler: SaliencyModelHandler):
        super().__init__()
        self.handler = handler

    def expand(self, rows):
        results, errors = rows | "RunInference" >> RunInference(self.handler).with_exception_handling()
        explained = results | "WithRationale" >> beam.Map(with_rationale)
        failed = errors.failed_inferences | "FailedBatches" >> beam.FlatMap(without_rationale)
        return (explained, failed) | "Merge" >> beam.Flatten()
