"""Progress for long stages: done/total, rate and ETA, rate-limited so logs stay readable.

Written for stderr that is a log file as much as a terminal: whole lines only (no carriage
returns or bars), the first update, then at most one line every `every_s` seconds, and always
the last one, so a 100-epoch baseline prints a handful of lines, not a hundred.

    progress = Progress("evaluate", total=len(texts), unit="rows")
    for batch in batches:
        ...
        progress.update(len(batch))
    progress.close()
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

EVERY_S = 10.0


def duration(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    def __init__(self, name: str, total: int, unit: str = "rows", every_s: float = EVERY_S,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.name, self.total, self.unit, self.every_s = name, max(int(total), 0), unit, every_s
        self.stream, self.clock = stream, clock
        self.done, self.start = 0, clock()
        self._last: float | None = None
        self.lines = 0

    def line(self, note: str = "") -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = (f", ETA {duration((self.total - self.done) / rate)}"
               if rate > 0 and self.done < self.total else "")
        return (f"{self.name}: {self.done}/{self.total} {self.unit}{pct}, {rate:.1f} {self.unit}/s, "
                f"elapsed {duration(elapsed)}{eta}{f'; {note}' if note else ''}")

    def update(self, n: int = 1, note: str = "", force: bool = False) -> None:
        self.done += n
        now = self.clock()
        if force or self._last is None or now - self._last >= self.every_s or self.done >= self.total:
            self._emit(note)
            self._last = now

    def close(self, note: str = "") -> None:
        """The final line, unless the last update already printed the finished count."""
        if self._last is None or self.done < self.total or note:
            self._emit(note)

    def _emit(self, note: str) -> None:
        print(self.line(note), file=self.stream or sys.stderr, flush=True)
        self.lines += 1
