"""Student and TA signals, and the teacher-budget selection, as Beam transforms over Records.

The signals travel on each Record (`Record.values`) to the writer, where `potstill.publish.contract.row`
turns them into contract columns (models/student/signals.py has the formulas). A batch a model cannot
score keeps its rows, without that signal, and is counted (`student_failed`, `ta_failed`):
signals are advisory, the rows are not lost over them.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from potstill.models.student.signals import student_signals
from potstill.models.teacher.teacher_setup import TeacherSetup
from potstill.config.core import Budget, Signals
from potstill.rows.records import Record
from potstill.transforms.progress import StageProgress, TextBytes

log = logging.getLogger(__name__)


class StudentModelHandler(TextBytes, ModelHandler[Record, Record, Any]):
    """Loads a saved student (models/student/student.py) once per worker and adds its four columns."""

    def __init__(self, student_dir: str, labels: Sequence[str], settings: Signals,
                 max_length: int = 128, threads: int | None = None, expected_rows: int | None = None):
        super().__init__()
        self.student_dir, self.labels, self.settings = student_dir, list(labels), settings
        self.max_length, self.threads = max_length, threads
        self.progress = StageProgress("student signals", expected_rows)

    def load_model(self):
        import torch
        from potstill.models.student.student import load_student

        if self.threads:
            torch.set_num_threads(self.threads)
        model, _ = load_student(self.student_dir)
        return model

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.settings.batch_size * 4}

    def run_inference(self, batch: Sequence[Record], model, inference_args=None) -> Iterable[Record]:
        sig, start = self.settings, time.perf_counter()
        try:
            found = student_signals(model, [r.model_input for r in batch], self.labels,
                                    sig.consistency_samples, sig.batch_size, self.max_length, sig.seed)
        except Exception:  # noqa: BLE001 -- advisory signal: keep the rows, count the batch
            log.exception("student signals failed for a batch of %d rows", len(batch))
            Metrics.counter("potstill", "student_failed").inc(len(batch))
            return list(batch)
        self.progress.add(len(batch), time.perf_counter() - start)
        return [r.with_values(**values) for r, values in zip(batch, found)]

    def get_metrics_namespace(self) -> str:
        return "potstill_student"


class TAModelHandler(TextBytes, ModelHandler[Record, Record, Any]):
    """Loads the teaching-assistant LM once per worker (the teacher's setup narrowed by
    `TeacherSetup.for_assistant`); adds its label distribution `ta_probs`, read out at the
    teacher's and the student's labels when the row is written (potstill.publish.contract.row)."""

    def __init__(self, setup: TeacherSetup, batch_size: int = 16, expected_rows: int | None = None):
        super().__init__()
        self.setup, self.batch_size = setup, batch_size
        self.progress = StageProgress("teaching assistant", expected_rows)

    def load_model(self):
        start = time.perf_counter()
        lt = self.setup.load()
        log.info("teaching assistant ready (%s) in %.1fs", self.setup.model_path, time.perf_counter() - start)
        return lt

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.batch_size * 4}

    def run_inference(self, batch: Sequence[Record], model, inference_args=None) -> Iterable[Record]:
        from potstill.models.teacher.hf import normalise

        start = time.perf_counter()
        try:
            raw, _ = model.score_records(batch)
        except Exception:  # noqa: BLE001 -- advisory signal: keep the rows, count the batch
            log.exception("TA scoring failed for a batch of %d rows", len(batch))
            Metrics.counter("potstill", "ta_failed").inc(len(batch))
            return list(batch)
        probs = normalise(raw)
        self.progress.add(len(batch), time.perf_counter() - start)
        return [r.with_values(ta_probs=tuple(float(x) for x in p)) for r, p in zip(batch, probs)]

    def get_metrics_namespace(self) -> str:
        return "potstill_ta"


def _candidate(record: Record) -> dict:
    return {"id": record.id, **{k: record.value(k) for k in
                                ("student_label", "student_entropy", "student_consistency")}}


def _choose(candidates: list[dict], n: int, strategy: str, seed: int, n_labels: int) -> frozenset:
    from potstill.publish.selection import budget_ranking

    schema = pa.schema([("id", pa.string()), ("student_label", pa.string()),
                        ("student_entropy", pa.float64()), ("student_consistency", pa.float64())])
    table = pa.Table.from_pylist(candidates, schema=schema)
    chosen = budget_ranking(table, n, strategy, seed, n_labels)
    log.info("budget: %d of %d candidate rows go to the teacher (%s)", len(chosen), len(candidates), strategy)
    return frozenset(chosen)


class SelectForTeacher(beam.PTransform):
    """Records -> `selected` (seed rows on the first round, plus the pool rows sql/budget.sql
    ranks highest, at most `n`) and `over_budget` records (last round only, marked with that
    filter reason).

    Pool rows in `done` were sent to the teacher in an earlier round and are dropped here (their
    rows are staged already); seed rows pass on the first round only, for the same reason.
    The ranking is global: the candidates' ids and three signals (~100 bytes a row) meet on one
    worker, where DuckDB ranks them; the rows themselves stay distributed.
    """

    def __init__(self, budget: Budget, n_labels: int, n: int, round_index: int,
                 done: frozenset = frozenset(), last_round: bool = True):
        super().__init__()
        self.budget, self.n_labels, self.n = budget, n_labels, n
        self.round, self.done, self.last = round_index, done, last_round

    def expand(self, records):
        b, first, done = self.budget, self.round == 1, self.done
        seeds = (records | "Seeds" >> beam.Filter(lambda r: r.source == "seed" and first))
        pool = (records | "Pool" >> beam.Filter(lambda r: r.source != "seed" and r.id not in done))
        chosen = (pool
                  | "Candidates" >> beam.Map(_candidate)
                  | "AllCandidates" >> beam.combiners.ToList()
                  | "Rank" >> beam.Map(_choose, self.n, b.strategy, b.seed, self.n_labels))
        picked = beam.pvalue.AsSingleton(chosen)
        selected = (pool | "Chosen" >> beam.Filter(lambda r, ids: r.id in ids, picked))
        rows = ([seeds, selected] | "ToTeacher" >> beam.Flatten()
                | "MarkRound" >> beam.Map(lambda r, k: r.with_values(selection_round=k), self.round))
        if not self.last:
            over = records.pipeline | "NoOverBudget" >> beam.Create([])
        else:
            over = (pool | "NotChosen" >> beam.Filter(lambda r, ids: r.id not in ids, picked)
                    | "OverBudget" >> beam.Map(lambda r: r.with_values(filter_reason="over_budget")))
        return {"selected": rows, "over_budget": over}
