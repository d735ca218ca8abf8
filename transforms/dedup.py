"""Exact deduplication by content id, and the test-split leak guard."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from potstill.rows.records import Record

FILTERED = "filtered"
_PRIORITY = {"seed": 0, "corpus": 1, "generated": 2}


def choose(records: list[Record]) -> tuple[Record, list[Record]]:
    """Keep one record per id: gold seed rows win, then the earliest input reference."""
    ordered = sorted(records, key=lambda r: (_PRIORITY.get(r.source, 9), r.input_ref))
    return ordered[0], ordered[1:]


class _Resolve(beam.DoFn):
    def __init__(self):
        self.dups = Metrics.counter("potstill", "filtered_duplicate")
        self.leaks = Metrics.counter("potstill", "filtered_test_overlap")

    def process(self, keyed, test_ids):
        _, records = keyed
        keep, dups = choose(list(records))
        for r in dups:
            self.dups.inc()
            yield beam.pvalue.TaggedOutput(FILTERED, r.with_values(filter_reason="duplicate"))
        if keep.id in test_ids:
            self.leaks.inc()
            yield beam.pvalue.TaggedOutput(FILTERED, keep.with_values(filter_reason="test_overlap"))
        else:
            yield keep


class Deduplicate(beam.PTransform):
    """Records -> unique Records (main) and `filtered` Records (filter_reason duplicate or
    test_overlap).

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
