"""The one redaction of secrets (a remote teacher's API key) from everything potstill prints or
writes: exception messages, log lines, rejected rows, error bodies, and the texts of answers
potstill keeps (generated texts, the model names of /v1/models).

A key is registered (`register`) when it is read from its environment variable or handed to an
HTTP client; from then on `redact(text)` replaces, in any text, every run of eight or more
characters that is part of a registered key, in each form a server may echo it back in:

- plain, or cut anywhere (a prefix or suffix of eight characters or more is still a secret:
  a server or a log may cut a message in the middle of the key);
- escaped, in any mixture: JSON (`\\/`, `\\uXXXX`, surrogate pairs, `\\"`, `\\\\`), Python (`\\xXX`),
  URL (`%XX`), HTML (`&#NN;`, `&#xHH;`, `&amp;`...), up to three levels deep (JSON inside JSON).
  Text is matched through a decoded view that keeps each decoded character's span in the
  original, so the escaped form is replaced where it stands, whole;
- base64, at each of the three byte alignments (a key inside `user:key` for basic auth, or
  anything else encoded around it), standard and URL-safe alphabets.

Every run found is replaced by `[api key]`. Redact first, cut afterwards: a cut made after
redaction can only split the marker, never leave a usable part of a key.

Log records are redacted as they are made (a log record factory, installed with the first key),
so a log line, its arguments and its traceback never carry a key, whatever logger or handler
takes them.
"""
from __future__ import annotations

import base64
import bisect
import logging
import re
import threading
import traceback

MARK = "[api key]"
MIN_RUN = 8  # a shorter fragment of a key is not a usable secret; a longer one is

_ESCAPE = re.compile(
    r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"  # a JSON surrogate pair
    r"|\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})|\\([\\/\"'bfnrt])"        # JSON / Python escapes
    r"|%([0-9a-fA-F]{2})"                                                # URL encoding
    r"|&#[xX]([0-9a-fA-F]{1,6});|&#([0-9]{1,7});|&(amp|lt|gt|quot|apos);")  # HTML entities
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}

_lock = threading.Lock()
_grams: dict[str, frozenset[str]] = {}  # per registered secret: the runs that betray it
_all: frozenset[str] = frozenset()       # all of them
_installed = False


def register(secret: str | None) -> None:
    """Redact `secret` from now on, in this process (and install the log record redaction)."""
    global _installed, _all
    if not secret:
        return
    with _lock:
        if secret not in _grams:
            _grams[secret] = _betraying_runs(secret)
            _all = _all | _grams[secret]
        if not _installed:
            _install_log_redaction()
            _installed = True


def redact(text: str, secret: str | None = None) -> str:
    """`text` with every registered secret (and `secret`) replaced by `[api key]`, in every form
    the module docstring lists."""
    if not isinstance(text, str) or not text:
        return text
    grams = _all
    if secret and secret not in _grams:
        grams = grams | _betraying_runs(secret)
    if not grams:
        return text
    spans = _find(_View(text), grams)
    if not spans:
        return text
    out, last = [], 0
    for start, end in _merged(spans):
        out.append(text[last:start])
        out.append(MARK)
        last = end
    out.append(text[last:])
    return "".join(out)


def redact_json(value, secret: str | None = None):
    """Every string (keys included) of a parsed JSON value, redacted."""
    if isinstance(value, str):
        return redact(value, secret)
    if isinstance(value, list):
        return [redact_json(v, secret) for v in value]
    if isinstance(value, dict):
        return {redact(k, secret): redact_json(v, secret) for k, v in value.items()}
    return value


def _betraying_runs(secret: str) -> frozenset[str]:
    """The MIN_RUN-long runs of the secret's literal forms (plain and base64); escaped forms
    are found through the decoded views instead."""
    forms = [secret]
    raw = secret.encode()
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw).decode()
        # drop the groups that also hold bytes around the key: they depend on its neighbours
        inner = encoded[4 if pad else 0: len(encoded) - 4]
        forms += [inner, inner.replace("+", "-").replace("/", "_")]
    n = min(MIN_RUN, len(secret))
    return frozenset(f[i:i + n] for f in forms if len(f) >= n for i in range(len(f) - n + 1))


class _View:
    """A text, or a text with its escapes decoded once more (`parent`): each decoded character
    knows the span it came from in the original."""

    def __init__(self, text: str, parent: "_View | None" = None, marks=None):
        self.text, self.parent = text, parent
        self.marks = marks or []  # (decoded position, start, end in the parent) per escape
        self._at = [m[0] for m in self.marks]

    def decoded(self) -> "_View | None":
        """This text with one level of escapes decoded; None when it has none."""
        parts, marks, last, pos = [], [], 0, 0
        for m in _ESCAPE.finditer(self.text):
            char = _decode(m)
            if char is None:
                continue
            parts.append(self.text[last:m.start()])
            pos += m.start() - last
            marks.append((pos, m.start(), m.end()))
            parts.append(char)
            pos += 1
            last = m.end()
        if not marks:
            return None
        parts.append(self.text[last:])
        return _View("".join(parts), self, marks)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original text's span of this view's characters start..end."""
        a, b = self._parent_pos(start)[0], self._parent_pos(end - 1)[1]
        if self.parent is None:
            return a, b
        return self.parent.span(a, b)

    def _parent_pos(self, i: int) -> tuple[int, int]:
        k = bisect.bisect_right(self._at, i) - 1
        if k < 0:
            return i, i + 1
        at, start, end = self.marks[k]
        if at == i:
            return start, end
        return end + (i - at - 1), end + (i - at)


def _decode(m: re.Match) -> str | None:
    hi, lo, u, x, simple, pct, hexent, decent, named = m.groups()
    try:
        if hi:
            return chr(0x10000 + ((int(hi, 16) - 0xD800) << 10) + (int(lo, 16) - 0xDC00))
        if u or x or pct or hexent:
            return chr(int(u or x or pct or hexent, 16))
        if decent:
            return chr(int(decent))
    except (ValueError, OverflowError):  # not a character: left as it is
        return None
    if simple:
        return _SIMPLE.get(simple, simple)
    return _ENTITIES[named]


def _find(view: _View, grams: set[str]) -> list[tuple[int, int]]:
    """Original spans of every gram found in the text or in its decoded views (three levels)."""
    spans = []
    for _ in range(4):
        text = view.text
        for gram in grams:
            start = text.find(gram)
            while start >= 0:
                spans.append(view.span(start, start + len(gram)))
                start = text.find(gram, start + 1)
        view = view.decoded()
        if view is None:
            break
    return spans


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def _install_log_redaction() -> None:
    """Every log record made from now on carries its message, arguments and traceback redacted."""
    make = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 -- a bad format is the handler's to report
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[0] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text)
        return record

    logging.setLogRecordFactory(factory)
