"""Progress for long stages: done/total, rate and ETA, rate-limited so logs stay readable.

Written for stderr that is a log file as much as a terminal: whole lines only (no carriage
returns or bars), the first update, then at most one line every `every_s` seconds, and always
the last one, so a 100-epoch baseline prints a handful of lines, not a hundred. On stderr each
line has the log's format (LOG_FORMAT), so a log file reads as one stream.

`configure_logging` sets that stream up once, when a command starts: potstill's records in
LOG_FORMAT, Python warnings routed into it, third-party progress bars (tqdm: transformers'
"Loading weights", huggingface_hub, datasets) off and known import-time noise dropped, so every
stderr line is a whole line of the log.

    progress = Progress("evaluate", total=len(texts), unit="rows")
    for batch in batches:
        ...
        progress.update(len(batch))
    progress.close()
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable, TextIO

EVERY_S = 10.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Set (unless the user set them) before the libraries read them: no tqdm bar writes "\r" to stderr.
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
             "TQDM_DISABLE": "1"}
QUIET_LOGGERS = ("apache_beam", "great_expectations", "urllib3", "httpx")  # their warnings only
# Beam logs a stage's exception with its traceback and then re-raises it with the step's name
# (runners/common.py): the command reports it once, as a user error (exit 2) or as a bug (exit 1).
RERAISED = "apache_beam.runners.common"
# Root-logger records other libraries emit on import that say nothing about the user's job:
# apache_beam's note that the GCP clients potstill never uses are not installed.
NOISE = ("apitools not found",)


class LogFormatter(logging.Formatter):
    """LOG_FORMAT, with every further line of a record (a traceback, a warning's source line, a
    multi-line summary) indented: a line that does not start with a timestamp continues the one
    above it."""

    def __init__(self):
        super().__init__(LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\n  ")


def log_line(message: str, name: str = "potstill.progress") -> str:
    """`message` as an INFO record of the log (LogFormatter), for text printed beside it."""
    return LogFormatter().format(logging.LogRecord(name, logging.INFO, "", 0, message, None, None))


def _not_noise(record: logging.LogRecord) -> bool:
    return not (record.name == "root" and record.getMessage().startswith(NOISE))


def configure_logging(verbose: bool = False, models: bool = True) -> None:
    """stderr as the log: potstill's records (DEBUG with `verbose`, else INFO) and every library's
    warnings in LOG_FORMAT (LogFormatter), whole lines only, no progress bars. Python warnings
    become records of the log; with `models` (a command that loads them) so do transformers',
    whose own handler prints "[transformers] ..." beside it. A root logger that already has
    handlers (a test, an application embedding potstill) is left as it is: only the
    environment, the bars and the third-party levels change."""
    for var, value in QUIET_ENV.items():
        os.environ.setdefault(var, value)
    if "huggingface_hub" in sys.modules:  # imported before the environment was set
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger(RERAISED).setLevel(logging.CRITICAL)
    if logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter())
    handler.addFilter(_not_noise)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.captureWarnings(True)
    if models:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()


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
        line = self.line(note)
        print(line if self.stream else log_line(line), file=self.stream or sys.stderr, flush=True)
        self.lines += 1
