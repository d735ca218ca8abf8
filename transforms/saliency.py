"""Saliency rationales inside Beam's RunInference, with our own ModelHandler.

Records the teacher has scored come in; the same records leave with `rationale` and
`rationale_scores` added (models/saliency/attribution.py says how they are computed). A batch whose
attribution fails keeps its rows, with both columns null, and is counted (`saliency_failed`):
rationales are optional, the teacher's labels are not lost over them.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from potstill.models.saliency.attribution import Explainer, explained_labels
from potstill.models.teacher.teacher_setup import TeacherSetup
from potstill.config.core import Saliency
from potstill.rows.records import Record
from potstill.transforms.progress import StageProgress, TextBytes

log = logging.getLogger(__name__)


def explain_records(explainer: Explainer, records: Sequence[Record], explain: str) -> list[dict]:
    """{rationale, rationale_scores} per scored record."""
    labels = explained_labels([{"teacher_label": r.value("teacher_label"), "gold_label": r.gold_label}
                               for r in records], explain)
    n_options = [len(r.choices) if r.choices else None for r in records]
    found = explainer.explain([r.model_input for r in records], labels, n_options)
    return [{"rationale": e.rationale, "rationale_scores": e.rationale_scores} for e in found]


class SaliencyModelHandler(TextBytes, ModelHandler[Record, Record, Explainer]):
    """Explains with the teacher the driver set up (the demonstrations and calibration the
    teacher stage used, so the prompt and the probability explained are the ones that were
    scored), in torch whatever the teacher's backend; weights shared with the teacher stage."""

    def __init__(self, setup: TeacherSetup, settings: Saliency, expected_rows: int | None = None):
        super().__init__()
        self.setup, self.settings = setup, settings
        self.progress = StageProgress("saliency", expected_rows)

    def load_model(self) -> Explainer:
        if self.setup.backend != "hf":
            log.info("teacher backend is %s (no gradients): the saliency stage loads the same "
                     "weights from %s in torch (transformers)", self.setup.backend, self.setup.model_path)
        start = time.perf_counter()
        explainer = Explainer.configured(self.setup.load(backend="hf"), self.settings)
        log.info("saliency (%s) ready in %.1fs", self.settings.method, time.perf_counter() - start)
        return explainer

    def batch_elements_kwargs(self) -> dict[str, Any]:
        # several forward batches per call, so sorting by length inside `explain` has room
        return {"min_batch_size": 1, "max_batch_size": self.settings.batch_size * 4}

    def run_inference(self, batch: Sequence[Record], model: Explainer,
                      inference_args: dict | None = None) -> Iterable[Record]:
        start = time.perf_counter()
        found = explain_records(model, batch, self.settings.explain)
        Metrics.counter("potstill", "saliency_explained").inc(len(batch))
        self.progress.add(len(batch), time.perf_counter() - start)
        return [r.with_values(**f) for r, f in zip(batch, found)]

    def get_metrics_namespace(self) -> str:
        return "potstill_saliency"


def without_rationale(failure) -> list[Record]:
    batch, exc = failure
    log.warning("saliency failed on a batch of %d rows: %s: %s", len(batch), type(exc).__name__, exc)
    Metrics.counter("potstill", "saliency_failed").inc(len(batch))
    return [r.with_values(rationale=None, rationale_scores=None) for r in batch]


class AddRationales(beam.PTransform):
    """Scored records -> the same records with `rationale` and `rationale_scores`."""

    def __init__(self, handler: SaliencyModelHandler):
        super().__init__()
        self.handler = handler

    def expand(self, records):
        explained, errors = records | "RunInference" >> RunInference(self.handler).with_exception_handling()
        failed = errors.failed_inferences | "FailedBatches" >> beam.FlatMap(without_rationale)
        return (explained, failed) | "Merge" >> beam.Flatten()
