"""Canonical teacher batches (transforms/teacher.py): little padding on a long-tailed corpus, and
the same batches whatever order the rows arrive in."""
import random

from potstill.models.teacher.requests import Request
from potstill.rows.records import Record
from potstill.transforms.teacher import batch_group, canonical_batches, padding_waste, partitions


def long_tailed(n: int, seed: int = 0) -> list[Record]:
    """Rows whose token counts look like news articles cut at 512: median ~100, a long tail."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        length = min(512, max(5, int(rng.lognormvariate(4.6, 0.8))))
        ids = tuple(rng.randrange(1000) for _ in range(length))
        records.append(Record(f"r{i}", "x", "corpus", None, f"f:{i}").with_values(
            request=Request(f"k{i}", "prefix", ids, length)))
    return records


def batches(records: list[Record], batch: int) -> list[tuple[Record, ...]]:
    p = partitions(len(records), batch)
    groups: dict = {}
    for r in records:
        groups.setdefault(batch_group(r, p), []).append(r)
    return [b for g in sorted(groups.items()) for b in canonical_batches(g, batch)]


def test_canonical_batches_keep_padding_low_on_a_long_tailed_corpus():
    records = long_tailed(3000)
    arrival = [records[i:i + 8] for i in range(0, len(records), 8)]
    assert padding_waste(arrival) > 1.5  # the corpus is long-tailed: unsorted batches waste
    canonical = batches(records, 8)
    assert sorted(r.id for b in canonical for r in b) == sorted(r.id for r in records)
    assert padding_waste(canonical) <= 1.15


def test_canonical_batches_do_not_depend_on_arrival_order():
    records = long_tailed(600, seed=1)
    shuffled = random.Random(2).sample(records, len(records))
    ids = lambda bs: [tuple(r.id for r in b) for b in bs]  # noqa: E731
    assert ids(batches(records, 8)) == ids(batches(shuffled, 8))


def test_padding_waste_counts_padded_over_real_tokens():
    rows = [Record(f"r{n}", "x", "corpus", None, "f:0").with_values(
        request=Request("k", None, (1,) * n, n)) for n in (2, 4)]
    assert padding_waste([rows]) == 8 / 6
