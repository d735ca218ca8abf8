"""Student and TA signals, and the teacher-budget selection, as Beam transforms over Records.

The signals travel on each Record (`Record.signals`) to the teacher stage, whose `scored_row`
turns them into contract columns (models/signals.py has the formulas). A batch a model cannot
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

from models.signals import student_signals, ta_config
from potstill.config import Config
from potstill.records import Record
from transforms.dedup import filtered_row

log = logging.getLogger(__name__)


class StudentModelHandler(ModelHandler[Record, Record, Any]):
    """Loads a saved student (models/student.py) once per worker and adds its four columns."""

    def __init__(self, cfg: Config, student_dir: str):
        super().__init__()
        self.cfg, self.student_dir = cfg, student_dir

    def load_model(self):
        import torch
        from models.student import load_student

        if self.cfg.student.threads:
            torch.set_num_threads(self.cfg.student.threads)
        model, _ = load_student(self.student_dir)
        return model

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.cfg.signals.batch_size * 4}

    def run_inference(self, batch: Sequence[Record], model, inference_args=None) -> Iterable[Record]:
        sig = self.cfg.signals
        try:
            found = student_signals(model, [r.model_input for r in batch], self.cfg.task.labels,
                                    sig.consistency_samples, sig.batch_size,
                                    self.cfg.student.max_length, sig.seed)
        except Exception:  # noqa: BLE001 -- advisory signal: keep the rows, count the batch
            log.exception("student signals failed for a batch of %d rows", len(batch))
            Metrics.counter("potstill", "student_failed").inc(len(batch))
            return list(batch)
        return [r.with_signals(**values) for r, values in zip(batch, found)]

    def get_metrics_namespace(self) -> str:
        return "potstill_student"


class TAModelHandler(ModelHandler[Record, Record, Any]):
    """Loads the teaching-assistant LM once per worker; adds its label distribution `ta_probs`,
    read out at the teacher's and the student's labels once the teacher has scored the row."""

    def __init__(self, cfg: Config, model_path: str):
        super().__init__()
        self.cfg, self.model_path = ta_config(cfg, model_path), model_path

    def load_model(self):
        from models.audit import build_teacher

        start = time.perf_counter()
        lt = build_teacher(self.cfg, self.model_path, [])
        log.info("teaching assistant loaded from %s in %.1fs", self.model_path, time.perf_counter() - start)
        return lt

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.cfg.signals.ta_batch_size * 4}

    def run_inference(self, batch: Sequence[Record], model, inference_args=None) -> Iterable[Record]:
        from models.teacher import normalise

        try:
            raw, _ = model.score_records(batch)
        except Exception:  # noqa: BLE001 -- advisory signal: keep the rows, count the batch
            log.exception("TA scoring failed for a batch of %d rows", len(batch))
            Metrics.counter("potstill", "ta_failed").inc(len(batch))
            return list(batch)
        probs = normalise(raw)
        return [r.with_signals(ta_probs=tuple(float(x) for x in p)) for r, p in zip(batch, probs)]

    def get_metrics_namespace(self) -> str:
        return "potstill_ta"


def _candidate(record: Record) -> dict:
    values = dict(record.signals)
    return {"id": record.id, **{k: values.get(k) for k in
                                ("student_label", "student_entropy", "student_consistency")}}


def _choose(candidates: list[dict], n: int, strategy: str, seed: int, n_labels: int) -> frozenset:
    from potstill.selection import budget_ranking

    schema = pa.schema([("id", pa.string()), ("student_label", pa.string()),
                        ("student_entropy", pa.float64()), ("student_consistency", pa.float64())])
    table = pa.Table.from_pylist(candidates, schema=schema)
    chosen = budget_ranking(table, n, strategy, seed, n_labels)
    log.info("budget: %d of %d candidate rows go to the teacher (%s)", len(chosen), len(candidates), strategy)
    return frozenset(chosen)


class SelectForTeacher(beam.PTransform):
    """Records -> `selected` (seed rows on the first round, plus the pool rows sql/budget.sql
    ranks highest, at most `n`), `over_budget` filtered rows (last round only) and `ids` (the
    chosen pool ids, for the driver's count of teacher calls spent).

    Pool rows in `done` were sent to the teacher in an earlier round and are dropped here (their
    rows are staged already); seed rows pass on the first round only, for the same reason.
    The ranking is global: the candidates' ids and three signals (~100 bytes a row) meet on one
    worker, where DuckDB ranks them; the rows themselves stay distributed.
    """

    def __init__(self, cfg: Config, n: int, round_index: int, done: frozenset = frozenset(),
                 last_round: bool = True):
        super().__init__()
        self.cfg, self.n, self.round, self.done, self.last = cfg, n, round_index, done, last_round

    def expand(self, records):
        b, first, done = self.cfg.budget, self.round == 1, self.done
        seeds = (records | "Seeds" >> beam.Filter(lambda r: r.source == "seed" and first))
        pool = (records | "Pool" >> beam.Filter(lambda r: r.source != "seed" and r.id not in done))
        chosen = (pool
                  | "Candidates" >> beam.Map(_candidate)
                  | "AllCandidates" >> beam.combiners.ToList()
                  | "Rank" >> beam.Map(_choose, self.n, b.strategy, b.seed, len(self.cfg.task.labels)))
        picked = beam.pvalue.AsSingleton(chosen)
        selected = (pool | "Chosen" >> beam.Filter(lambda r, ids: r.id in ids, picked))
        rows = ([seeds, selected] | "ToTeacher" >> beam.Flatten()
                | "MarkRound" >> beam.Map(lambda r, k: r.with_signals(selection_round=k), self.round))
        ids = chosen | "ChosenIds" >> beam.FlatMap(sorted)
        if not self.last:
            over = records.pipeline | "NoOverBudget" >> beam.Create([])
        else:
            labels = self.cfg.task.labels
            over = (pool | "NotChosen" >> beam.Filter(lambda r, ids: r.id not in ids, picked)
                    | "OverBudget" >> beam.Map(lambda r: filtered_row(r, "over_budget", labels)))
        return {"selected": rows, "over_budget": over, "ids": ids}
