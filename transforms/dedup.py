"""Exact deduplication by content id, and the test-split leak guard."""
from __future__ import annotations

import zlib

import apache_beam as beam
from apache_beam.metrics import Metrics

from potstill.rows.records import Record
from potstill.transforms.shuffle import pack, unpack_all

FILTERED = "filtered"
# Records are grouped by bucket of id, packed (transforms/shuffle.py): a few records a group
# at any corpus size, not one list per id (a million of them at a million rows)
BUCKETS = 1 << 16
_PRIORITY = {"seed": 0, "corpus": 1, "generated": 2}


def choose(records: list[Record]) -> tuple[Record, list[Record]]:
    """Keep one record per id: gold seed rows win, then the earliest input reference."""
    ordered = sorted(records, key=lambda r: (_PRIORITY.get(r.source, 9), r.input_ref))
    return ordered[0], ordered[1:]


def bucket(record_id: str) -> int:
    """The shuffle group of an id: every record with this id, and ~1/BUCKETS of the others."""
    return zlib.crc32(record_id.encode("utf-8")) % BUCKETS


class _Resolve(beam.DoFn):
    def __init__(self):
        self.dups = Metrics.counter("potstill", "filtered_duplicate")
        self.leaks = Metrics.counter("potstill", "filtered_test_overlap")

    def process(self, keyed, test_ids):
        _, packed = keyed
        by_id: dict[str, list[Record]] = {}
        for record in unpack_all(packed):
            by_id.setdefault(record.id, []).append(record)
        for records in by_id.values():
            keep, dups = choose(records)
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
    test_overlap). Records meet by bucket of id (`bucket`), then by id.

    `test_ids` is a PCollection of ids of the evaluation split; a training row with the same
    normalised text would leak the test set into training, so it is filtered and counted.
    """

    def __init__(self, test_ids):
        super().__init__()
        self.test_ids = test_ids

    def expand(self, records):
        return (records
                | "KeyById" >> beam.Map(lambda r: (bucket(r.id), pack(r)))
                | "GroupById" >> beam.GroupByKey()
                | "KeepOne" >> beam.ParDo(_Resolve(), beam.pvalue.AsDict(self.test_ids))
                .with_outputs(FILTERED, main="unique"))
