"""Records through a shuffle as bytes.

Beam's in-process runner holds every value of a GroupByKey as a Python object until its groups
are read: a record with its teacher request is about 1.5 KB there (the object, its strings,
tuples and the table's lists). Packed by Beam's own element coder, the coder every runner moves
elements with, it is a few hundred bytes, so the graph's shuffles (deduplication, the canonical
batches, the store join) hold a corpus in a third of the memory. Packing changes nothing a step
sees: the step after the shuffle unpacks the very record that went in.
"""
from __future__ import annotations

from typing import Iterable

from apache_beam.coders import coders

from potstill.rows.records import Record

_CODER = coders.FastPrimitivesCoder()


def pack(record: Record) -> bytes:
    return _CODER.encode(record)


def unpack(data: bytes) -> Record:
    return _CODER.decode(data)


def unpack_all(values: Iterable[bytes]) -> list[Record]:
    return [_CODER.decode(v) for v in values]
