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


def test_a_request_keeps_its_ids_packed_and_sorts_as_its_ids_do():
    """Requests wait in the batches' shuffle, so their ids are packed bytes: the same ids back,
    the same order as (len(ids), ids), equal and hashed by value, immutable, and unchanged by
    the coder runners move them with."""
    import pickle

    import pytest
    from apache_beam.coders import coders

    rng = random.Random(3)
    rows = [tuple(rng.randrange(300_000) for _ in range(rng.randrange(0, 7))) for _ in range(3000)]
    requests = [Request(f"k{i}", ("prefix", None)[i % 2], ids, len(ids) + 4) for i, ids in enumerate(rows)]
    assert [q.ids for q in requests] == rows and [q.n_ids for q in requests] == [len(r) for r in rows]
    assert [q.ids for q in sorted(requests, key=Request.order)] == sorted(rows, key=lambda t: (len(t), t))
    coder = coders.FastPrimitivesCoder()
    for q in requests[:50]:
        back = coder.decode(coder.encode(q))
        assert back == q and hash(back) == hash(q) and back.ids == q.ids
        assert pickle.loads(pickle.dumps(q)) == q
    assert Request("k", None, [1, 2], 3) != Request("k", None, (1, 3), 3)
    with pytest.raises(AttributeError):
        requests[0].key = "other"
    big = Request("k", None, tuple(range(100_000, 100_400)), 400)
    assert len(coder.encode(big)) < 1700  # 4 bytes an id, where a pickled tuple takes 5
