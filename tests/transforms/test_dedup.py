"""Deduplication (transforms/dedup.py): records meet by bucket of id, packed, and each id still
keeps exactly the record `choose` picks, whatever else shares its bucket."""
import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from potstill.rows.records import Record, stable_id
from potstill.transforms import dedup


@pytest.mark.parametrize("buckets", [1, 3, dedup.BUCKETS])
def test_every_id_keeps_its_chosen_record_however_many_ids_share_a_bucket(monkeypatch, buckets):
    monkeypatch.setattr(dedup, "BUCKETS", buckets)
    texts = [f"row number {i}" for i in range(120)]
    records = [Record(stable_id(t), t, "corpus", None, f"u.jsonl:{i + 1}") for i, t in enumerate(texts)]
    records += [Record(stable_id(t), t + "  ", "corpus", None, f"u.jsonl:{500 + i}")  # same ids
                for i, t in enumerate(texts[:30])]
    records += [Record(stable_id(t), t, "seed", "positive", f"s.jsonl:{i + 1}") for i, t in enumerate(texts[20:40])]
    test_ids = [(stable_id(t), True) for t in texts[100:105]]
    by_id: dict = {}
    for r in records:
        by_id.setdefault(r.id, []).append(r)
    kept = {i: dedup.choose(rs) for i, rs in by_id.items()}
    leaked = {i for i, _ in test_ids}
    unique = [k for i, (k, _) in kept.items() if i not in leaked]
    filtered = [(d.input_ref, "duplicate") for _, (_, ds) in kept.items() for d in ds]
    filtered += [(kept[i][0].input_ref, "test_overlap") for i in leaked]
    assert len(unique) == 115 and len(filtered) == 30 + 20 + 5

    with BeamTestPipeline() as p:
        out = (p | "Records" >> beam.Create(records)
               | dedup.Deduplicate(p | "Test" >> beam.Create(test_ids)))
        assert_that(out.unique | "Unique" >> beam.Map(lambda r: (r.input_ref, r.source)),
                    equal_to([(r.input_ref, r.source) for r in unique]), label="unique")
        assert_that(out.filtered | "Filtered" >> beam.Map(lambda r: (r.input_ref, r.value("filter_reason"))),
                    equal_to(filtered), label="filtered")
    assert {r.source for r in unique if r.id in {stable_id(t) for t in texts[20:40]}} == {"seed"}


def test_a_packed_record_comes_back_equal():
    from potstill.models.teacher.requests import Request
    from potstill.transforms.shuffle import pack, unpack

    record = Record("a" * 16, "text ünïcode 🍅", "corpus", None, "u.csv:3", choices=("x", "y")).with_values(
        request=Request("k" * 64, "prefix", (1, 300, 151_000), 9), raw_candidates=[-0.5, -1.25],
        selection_round=2)
    back = unpack(pack(record))
    assert back == record and back.value("request").ids == (1, 300, 151_000)


def test_a_packed_record_keeps_every_value_type():
    """Packing encodes the record's fields natively (transforms/shuffle.py): each value comes
    back with its own type (bool not int, tuple not list, float not int, numpy as numpy)."""
    import numpy as np

    from potstill.transforms.shuffle import pack, unpack, unpack_all

    values = {"flag": True, "count": 3, "share": 3.0, "ids": (1, 2), "probs": [0.25, 0.75],
              "nested": {"a": [1, (2, 3)], "b": None}, "vector": np.arange(3, dtype=np.float32),
              "big": 2 ** 70, "raw": b"\x00\xff", "none": None}
    record = Record("b" * 16, "x", "generated", "pos", "g:1", intended_label="pos").with_values(**values)
    back = unpack(pack(record))
    assert [type(v) for _, v in back.values] == [type(v) for v in values.values()]
    assert back.value("nested") == values["nested"] and back.value("big") == 2 ** 70
    assert back.value("vector").dtype == np.float32 and back.value("vector").tolist() == [0.0, 1.0, 2.0]
    assert unpack_all([pack(record)] * 2)[1].values[:6] == record.values[:6]
    assert back.intended_label == "pos" and back.source == "generated"
