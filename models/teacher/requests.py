"""Teacher requests as values: what a row asks the teacher (its encoded prompt and the key that
identifies the answer), and how a batch of requests is answered when the model fails.

`encode_request` needs the tokenizer and the demonstration selector only, no weights: the graph
keys every row before it knows whether the teacher store already has the answer.

`answer_in_halves`: a failed batch is retried (`retries` times, exponential backoff from
`backoff_s`: transient errors such as a busy device or a dropped connection), then split in
halves, each answered the same way, down to single rows; only a row that fails alone is given
up, with its error. A poisoned row therefore costs its batch a few extra calls and loses only
itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np

from potstill.models.teacher.hf import _Encoded
from potstill.models.teacher.teacher_setup import LabelledTeacher

T = TypeVar("T")


class Request:
    """What one row asks the teacher. Immutable; compared and hashed by its fields. The token
    ids are kept packed (4-byte big-endian: a few hundred bytes a row where a tuple of ints
    takes kilobytes), because every row's request waits in the canonical batches' shuffle."""
    __slots__ = ("key", "shared", "packed", "prompt_tokens")
    key: str                   # TeacherStore.key: the teacher's identity, prompt ids, candidates
    shared: str | None         # the cached shared prompt part the row's ids follow, if any
    packed: bytes              # the row's own prompt tokens (after the shared part), packed
    prompt_tokens: int         # the whole prompt's length

    def __init__(self, key: str, shared: str | None, ids: Sequence[int], prompt_tokens: int):
        _fill(self, key, shared, np.asarray(ids, dtype=_PACKED).tobytes(), prompt_tokens)

    def __setattr__(self, name, value):
        raise AttributeError(f"a Request is immutable ({name})")

    @property
    def ids(self) -> tuple[int, ...]:
        """The row's own prompt tokens (after the shared part)."""
        return tuple(self._id_list())

    def _id_list(self) -> list[int]:
        return np.frombuffer(self.packed, dtype=_PACKED).tolist()

    @property
    def n_ids(self) -> int:
        return len(self.packed) // _PACKED.itemsize

    def order(self) -> tuple[int, bytes]:
        """Sorts as (len(ids), ids) does: big-endian unsigned ids compare as their bytes."""
        return self.n_ids, self.packed

    @property
    def encoded(self) -> _Encoded:
        return _Encoded(self._id_list(), self.shared)

    def _fields(self) -> tuple:
        return self.key, self.shared, self.packed, self.prompt_tokens

    def __eq__(self, other) -> bool:
        return isinstance(other, Request) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"Request(key={self.key!r}, shared={self.shared!r}, ids={self.ids!r}, "
                f"prompt_tokens={self.prompt_tokens!r})")

    def __reduce__(self):
        # how runners pickle requests (records carry them) between steps: the packed ids as they are
        return _unpacked, self._fields()


_PACKED = np.dtype(">u4")


def _fill(request: Request, *fields) -> None:
    """Set a new request's fields (key, shared, packed, prompt_tokens), past `__setattr__`."""
    for name, value in zip(Request.__slots__, fields):
        object.__setattr__(request, name, value)


def _unpacked(*fields) -> Request:
    request = Request.__new__(Request)
    _fill(request, *fields)
    return request


def encode_request(lt: LabelledTeacher, model_input: str) -> Request:
    """The request one row makes: its prompt (with the demonstrations the selector picks for it)
    and the candidates, keyed by what determines the answer (`lt`'s store)."""
    return encode_requests(lt, [model_input])[0]


def encode_requests(lt: LabelledTeacher, model_inputs: Sequence[str],
                    demos: Sequence[Sequence] | None = None) -> list[Request]:
    """`encode_request` for many rows at once: the selector embeds their texts in batches (one
    row at a time, the demonstration embedder cost ~25 ms a row on one core; in batches ~1 ms).
    A text's embedding moves in the 7th digit with its batch's shape, which picks other
    demonstrations only where two gold rows are that close to equally similar. `demos`: the
    selector's choice, when the caller made it already."""
    demos = (lt.demos(list(model_inputs)) if demos is None else demos) or [()] * len(model_inputs)
    out = []
    for encoded in lt.teacher.encode_many(list(model_inputs), demos):
        key, prompt_tokens = lt._key(encoded)
        out.append(Request(key, encoded.shared, tuple(encoded.ids), prompt_tokens))
    return out


@dataclass
class Answered:
    """What `answer_in_halves` did: per item its answer row or its error, and the calls made."""
    results: list                # np.ndarray row, or the BaseException of a row given up
    calls: int = 0               # rows sent to the model, every attempt counted
    retries: int = 0             # attempts after a failure
    batches: list = None         # (indices, answers) of every sub-batch answered, for the store


def answer_in_halves(items: Sequence[T], score: Callable[[Sequence[T]], np.ndarray], *,
                     retries: int = 2, backoff_s: float = 0.5,
                     sleep: Callable[[float], None] = time.sleep) -> Answered:
    out = Answered([None] * len(items), batches=[])

    def attempt(idx: list[int]) -> None:
        last: BaseException | None = None
        for n in range(retries + 1):
            if n:
                out.retries += 1
                sleep(backoff_s * 2 ** (n - 1))
            out.calls += len(idx)
            try:
                answers = np.asarray(score([items[i] for i in idx]))
            except Exception as err:  # noqa: BLE001 -- retried, split, then reported per row
                last = err
                continue
            for i, a in zip(idx, answers):
                out.results[i] = a
            out.batches.append((idx, answers))
            return
        if len(idx) == 1:
            out.results[idx[0]] = last
            return
        attempt(idx[: len(idx) // 2])
        attempt(idx[len(idx) // 2:])

    if items:
        attempt(list(range(len(items))))
    return out
