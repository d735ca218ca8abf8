"""The fallback teacher inside Beam: the gold rows' own classifier labels the rows the LLM would
have (models/quality/fallback.py), with no LLM call.

Records leave with the same teacher columns the LLM stage gives them (`label_probs`,
`teacher_label`, `teacher_confidence`, entropy, margin), so curation, the GE gate and the
writers see one contract. Seed rows get the classifier's out-of-fold probabilities; every other
row the fitted classifier's (pool rows the driver self-trained it on: the probabilities it
computed there, not embedded again). A batch the encoder fails on rejects its rows with the error
(`teacher_error`): a rerun asks again.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from potstill.models.embed_cache import text_key
from potstill.models.quality.fallback import GoldClassifier
from potstill.models.teacher.hf import label_stats
from potstill.rows.records import Record
from potstill.transforms.progress import StageProgress, TextBytes
from potstill.transforms.teacher import failed_batch_rows

log = logging.getLogger(__name__)
NAMESPACE = "potstill.fallback"


def classify(clf: GoldClassifier, embed, records: Sequence[Record]) -> list[Record]:
    """The classifier's teacher columns for each record (plain function: testable without Beam)."""
    probs = np.zeros((len(records), len(clf.labels)))
    fresh = []
    for i, r in enumerate(records):
        known = clf.oof.get(r.id) or (clf.pool_probs.get(text_key(r.model_input)) if clf.pool_probs else None)
        if known is None:
            fresh.append(i)
        else:
            probs[i] = known
    if fresh:
        probs[fresh] = clf.predict(embed([records[i].model_input for i in fresh]))
    logprobs = np.log(np.clip(probs, 1e-12, None))
    return [r.with_values(**stats) for r, stats in zip(records, label_stats(logprobs, list(clf.labels)))]


class ClassifierModelHandler(TextBytes, ModelHandler[Record, Record, Any]):
    """Loads `audit.gold_encoder` once per worker and labels batches of records."""

    def __init__(self, clf: GoldClassifier, batch_size: int = 64, expected_rows: int | None = None):
        super().__init__()
        self.clf, self.batch_size = clf, batch_size
        self.progress = StageProgress("fallback teacher", expected_rows)

    def load_model(self):
        from potstill.models.embed import Embedder
        from potstill.models.loading import shared

        path = self.clf.encoder_path
        return shared(("embedder", path, self.clf.max_length),
                      lambda: Embedder(path, max_length=self.clf.max_length))

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.batch_size}

    def run_inference(self, batch: Sequence[Record], model, inference_args: dict | None = None
                      ) -> Iterable[Record]:
        start = time.perf_counter()
        out = classify(self.clf, model, batch)
        Metrics.counter(NAMESPACE, "rows_labelled").inc(len(batch))
        self.progress.add(len(batch), time.perf_counter() - start)
        return out


class ScoreWithClassifier(beam.PTransform):
    """Records -> {scored: [PCollection], rejected}, like the LLM teacher stage (transforms/teacher.py)."""

    def __init__(self, handler: ClassifierModelHandler):
        super().__init__()
        self.handler = handler

    def expand(self, records):
        scored, errors = records | "Classify" >> RunInference(self.handler).with_exception_handling()
        rejected = errors.failed_inferences | "FailedBatches" >> beam.FlatMap(
            lambda failure: failed_batch_rows(([failure[0]], failure[1])))
        return {"scored": [scored], "rejected": rejected}
