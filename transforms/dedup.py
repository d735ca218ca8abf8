"""Exact deduplication by content id, and the test-split leak guard."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from models.signals import signal_columns
from potstill.records import Record

FILTERED = "filtered"
_PRIORITY = {"seed": 0, "corpus": 1, "generated": 2}


def choose(records: list[Record]) -> tuple[Record, list[Record]]:
    """Keep one record per id: gold seed rows win, then the earliest input reference."""
    ordered = sorted(records, key=lambda r: (_PRIORITY.get(r.source, 9), r.input_ref))
    return ordered[0], ordered[1:]


def filtered_row(record: Record, reason: str, labels=()) -> dict:
    """A filtered contract row with no teacher columns (the row never reached the teacher);
    signals the row already has (e.g. the student's, for over_budget rows) are kept."""
    signals = signal_columns(dict(record.signals), None, labels) if record.signals else {}
    return {**signals,"id": record.id, "text": record.text, "label": record.gold_label,
            "label_probs": None, "teacher_label": None, "teacher_confidence": None,
            "teacher_entropy": None, "teacher_margin": None, "gold_label": record.gold_label,
            "source": record.source, "weight": None, "filter_reason": reason,
            "intended_label": record.intended_label,
            "choices": list(record.choices) if record.choices else None}


class _Resolve(beam.DoFn):
    def __init__(self):
        self.dups = Metrics.counter("potstill", "filtered_duplicate")
        self.leaks = Metrics.counter("potstill", "filtered_test_overlap")

    def process(self, keyed, test_ids):
        _, records = keyed
        keep, dups = choose(list(records))
        for r in dups:
            self.dups.inc()
            yield beam.pvalue.TaggedOutput(FILTERED, filtered_row(r, "duplicate"))
        if keep.id in test_ids:
            self.leaks.inc()
            yield beam.pvalue.TaggedOutput(FILTERED, filtered_row(keep, "test_overlap"))
        else:
            yield keep


class Deduplicate(beam.PTransform):
    """Records -> unique Records (main) and `filtered` rows (duplicate, test_overlap).

    `test_ids` is a PCollection of ids of the evaluation split; a training row with the same
    normalised text would leak the test set into training, so it is filtered and counted.
    """

    def __init__(self, test_ids):
        super().__init__()
        self.test_ids = test_ids

    def expand(self, records):
        return (records
                | "KeyById" >> beam.Map(lambda r: (r.id, r))
                | "GroupById" >> beam.GroupByKey()
                | "KeepOne" >> beam.ParDo(_Resolve(), beam.pvalue.AsDict(self.test_ids))
                .with_outputs(FILTERED, main="unique"))
