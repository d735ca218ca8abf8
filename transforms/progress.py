"""Progress of a model stage inside Beam: rows done of at most how many, the model's own rate
(load time excluded) and an ETA, logged at most every `every_s` seconds so logs stay readable
when stderr is a file. One per handler, so per worker process; the driver's closing summary
(beam_pipelines/usage.py) gives the totals.

`TextBytes`: what the record handlers count as a batch's bytes for RunInference's metrics."""
from __future__ import annotations

import logging
import time

log = logging.getLogger("potstill.progress")


class StageProgress:
    def __init__(self, stage: str, expected: int | None = None, every_s: float = 15.0,
                 clock=time.perf_counter):
        self.stage, self.expected, self.every_s, self.clock = stage, expected, every_s, clock
        self.done, self.busy, self._last = 0, 0.0, clock()

    def line(self) -> str:
        rate = self.done / max(self.busy, 1e-9)
        if self.expected:  # an upper bound: rejected, duplicate and stored rows never get here
            left = max(self.expected - self.done, 0) / max(rate, 1e-9)
            return (f"{self.stage}: {self.done} of at most {self.expected} rows "
                    f"({rate:.1f} rows/s, ~{left:.0f} s left)")
        return f"{self.stage}: {self.done} rows ({rate:.1f} rows/s)"

    def add(self, n: int, seconds: float) -> bool:
        """Count `n` rows that took `seconds` of model time; log when it is time (-> True)."""
        self.done, self.busy = self.done + n, self.busy + seconds
        now = self.clock()
        if now - self._last < self.every_s:
            return False
        self._last = now
        log.info("%s", self.line())
        return True


class TextBytes:
    """RunInference's byte count of a batch (its metrics only) as the rows' text lengths: its
    default pickles every batch once more to measure it. Elements are records, or canonical
    batches of records (the teacher's)."""

    def get_num_bytes(self, batch) -> int:
        return sum(len(r.text) for element in batch
                   for r in (element if isinstance(element, tuple) else (element,)))
