"""Zero-shot evaluation of the teacher on the config's test split (no Beam: a quick audit)."""
from __future__ import annotations

import logging
import time

from models.metrics import classification_metrics
from models.registry import ensure_offline, resolve_model
from models.teacher import HFTeacher, normalise
from potstill.config import Config
from potstill.records import Bounds, read_split

log = logging.getLogger(__name__)


def read_test_split(cfg: Config):
    if cfg.corpus.test is None:
        raise FileNotFoundError("the config has no corpus.test split to evaluate on")
    test = cfg.corpus.test
    return read_split(test.path, source="test", text_field=test.text_field,
                      label_field=test.label_field, labels=cfg.task.labels,
                      bounds=Bounds(cfg.records.min_chars, cfg.records.max_chars))


def evaluate_teacher(cfg: Config, limit: int | None = None) -> dict:
    ensure_offline()
    records, rejected = read_test_split(cfg)
    records = records[:limit] if limit else records
    t = cfg.teacher
    teacher = HFTeacher(resolve_model(t.model).path, cfg.task.labels, cfg.task.instruction,
                        batch_size=t.batch_size, max_input_tokens=t.max_input_tokens,
                        dtype=t.dtype, threads=t.threads)
    start = time.perf_counter()
    logprobs = teacher.score_labels([r.text for r in records])
    seconds = time.perf_counter() - start
    probs = normalise(logprobs)
    index = {l: i for i, l in enumerate(cfg.task.labels)}
    metrics = classification_metrics([index[r.gold_label] for r in records],
                                     probs.argmax(axis=1).tolist(), cfg.task.labels, probs=probs)
    metrics.update(model="teacher", teacher=t.model, n_test_rejected=len(rejected),
                   rows_per_second=len(records) / max(seconds, 1e-9))
    return metrics
