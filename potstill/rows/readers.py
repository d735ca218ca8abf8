"""Rows out of one corpus file, exactly as they were read: the byte level under potstill.rows.records.

A text file (JSONL or CSV, optionally .gz/.bz2) is read as bytes, one PHYSICAL line at a time,
and each line is decoded strictly in the declared encoding. Nothing is ever replaced: a line
with bytes that are not valid in the encoding becomes a `Malformed` row with reason
`bad_encoding`, its bytes kept escaped (`escape_bytes`) and the offending byte offset in the
detail; so does a JSON line that escapes a lone UTF-16 surrogate (`\\ud800` without its
other half: it parses, but is no character). Line numbers count every physical line (blank
ones too), 1-based, so `file:line` points at the line an editor shows; Parquet rows are
numbered 1-based in file order.

Decoding choices: a UTF-8 byte-order mark at the very start of a file is part of the encoding
(utf-8-sig), not of the first row, and is dropped; lines may end in LF or CRLF; the encoding
must be ASCII-compatible (newline, quotes, braces and commas are single ASCII bytes), which
every common single- and multi-byte corpus encoding is, and UTF-16/32 are not.

CSV quoting (`csv_records`): a quoted field may span lines, but a quote that does not close
properly never merges rows. The parser is strict (after a closing quote only a delimiter or
the line end may follow; the file may not end inside quotes), and a record over several lines
counts as a broken quote when its quoted field does not close properly: a CSV error on a later
line, the end of the file, more than MAX_RECORD_LINES lines or MAX_RECORD_CHARS characters, or
more cells than the header. Its first line (where the quote opened) is rejected alone, with
the error and the line the parse broke on, and reading resumes at the next line, so every
line it swallowed is read again as a record of its own. One case cannot be told from a real
multi-line text, because it is one: a stray opening quote closed by a stray closing quote at
the end of a field a few lines later, with no more cells than the header; that record is
kept as one text, referenced by its first line, its raw text holding all its lines.
"""
from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import hashlib
import io
import json
import re
from collections import deque
from typing import IO, Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

BOM = codecs.BOM_UTF8
_ASCII = bytes(range(128))
csv.field_size_limit(2**31 - 1)  # a huge field is a too-long text (rejected), not a parse error
MAX_RECORD_LINES = 1_000         # physical lines one CSV record may span (csv_records)
MAX_RECORD_CHARS = 64 * 2**20    # characters one CSV record over several lines may hold
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # a JSON escape of a UTF-16 surrogate


class Malformed(str):
    """A row that could not be parsed; the string is the detail, `raw` the record as read."""

    def __new__(cls, detail: str, *, reason: str = "malformed_record", raw: str | None = None):
        obj = super().__new__(cls, detail)
        obj.reason, obj.raw = reason, raw
        return obj


class Row(dict):
    """A parsed row (field -> value) that remembers its text as read (`raw`: the JSON line or
    the CSV line(s), without the line ending); None for Parquet rows."""

    def __init__(self, fields: dict, raw: str | None = None):
        super().__init__(fields)
        self.raw = raw


class HashingReader(io.RawIOBase):
    """A read-only view of a binary file that hashes (SHA-256) its bytes in file order as a
    parser reads through it, so one pass over the bytes both parses and hashes the file.

    Bytes the parser seeks over are read and hashed on the way (Parquet skips its 4-byte magic);
    bytes it reads again are not hashed twice; `drain()` hashes whatever it left unread, after
    which `hashed` is the file's size and `sha` its digest."""

    def __init__(self, raw):
        self.raw, self.sha = raw, hashlib.sha256()
        self.hashed = 0  # bytes [0, hashed) are in `sha`
        self.pos = 0     # where the parser reads next

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.raw.seekable()

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = self.raw.seek(offset, whence)
        return self.pos

    def readinto(self, buffer) -> int:
        if self.pos > self.hashed:  # a gap the parser skipped: hash it on the way
            self._hash_gap()
        data = self.raw.read(len(buffer))
        buffer[:len(data)] = data
        self._hash(memoryview(data)[max(0, self.hashed - self.pos):])
        self.pos += len(data)
        return len(data)

    def _hash_gap(self) -> None:
        """Read and hash the bytes [hashed, pos), then stand at `pos` again."""
        self.raw.seek(self.hashed)
        while self.hashed < self.pos:
            data = self.raw.read(min(self.pos - self.hashed, 1 << 20))
            if not data:
                break
            self._hash(data)
        self.raw.seek(self.pos)

    def _hash(self, data) -> None:
        """Hash `data`, the bytes at `hashed` onwards."""
        self.sha.update(data)
        self.hashed += len(data)

    def drain(self) -> None:
        """Read and hash from the last hashed byte to the end of the file."""
        if self.pos != self.hashed:
            self.seek(self.hashed)
        while self.readinto(bytearray(1 << 20)):
            pass


def file_format(path: str) -> str:
    name = path.lower()
    for suffix in (".gz", ".bz2"):
        name = name.removesuffix(suffix)
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    raise ValueError(f"{path}: unsupported file type (use .parquet, .jsonl or .csv)")


def csv_delimiter(path: str) -> str:
    return "\t" if path.lower().removesuffix(".gz").removesuffix(".bz2").endswith(".tsv") else ","


def compression(path: str) -> str | None:
    return next((c for c in ("gz", "bz2") if path.lower().endswith("." + c)), None)


def decompressed(fileobj: IO[bytes], path: str) -> IO[bytes]:
    kind = compression(path)
    if kind == "gz":
        return gzip.GzipFile(fileobj=fileobj)
    if kind == "bz2":
        return bz2.BZ2File(fileobj)
    return fileobj


def check_encoding(name: str) -> str:
    """`name` if it is a known, ASCII-compatible text encoding; else ValueError saying why."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}") from None
    try:
        ok = _ASCII.decode(name) == _ASCII.decode("ascii") and "\n".encode(name) == b"\n"
    except (LookupError, TypeError, ValueError, UnicodeError):  # rot13 and other non-text codecs
        ok = False
    if not ok:
        raise ValueError(f"encoding {name!r} is not an ASCII-compatible text encoding (lines are "
                         "split on the newline byte): convert the files to UTF-8")
    return name


def escape_bytes(text: str) -> str:
    """Text decoded with surrogateescape -> printable: each undecodable byte as \\xNN and each
    backslash doubled, so the original bytes can be recovered exactly."""
    out = []
    for ch in text:
        code = ord(ch)
        out.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF
                   else "\\\\" if ch == "\\" else ch)
    return "".join(out)


def _strip_eol(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def decoded_lines(stream: Iterable[bytes], encoding: str
                  ) -> Iterator[tuple[int, str, str | None]]:
    """(1-based physical line number, text with its line ending, bad-encoding detail or None).
    A bad line's text is decoded with surrogateescape (see `escape_bytes`)."""
    utf8 = codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    codec = "utf-8" if utf8 else encoding
    offset = 0
    for number, line in enumerate(stream, start=1):
        start = offset
        offset += len(line)
        if number == 1 and utf8 and line.startswith(BOM):
            line, start = line[len(BOM):], start + len(BOM)
        try:
            yield number, line.decode(codec), None
        except UnicodeDecodeError as err:
            bad = line[err.start:err.end]
            yield number, line.decode(codec, errors="surrogateescape"), (
                f"not valid {encoding}: byte 0x{bad[0]:02x} at byte offset {err.start} of line "
                f"{number} (byte {start + err.start} of the file) ({err.reason})")


def jsonl_rows(lines) -> Iterator[tuple[int, Row | Malformed]]:
    for number, text, bad in lines:
        line = _strip_eol(text)
        if bad:
            yield number, Malformed(bad, reason="bad_encoding", raw=escape_bytes(line))
            continue
        if not line.strip(" \t\r\n"):
            continue  # a blank line is not a record (it still counts as a line)
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            yield number, Malformed(f"invalid JSON: {err.msg.removesuffix(' at')} at column {err.colno}",
                                    raw=line)
            continue
        except (ValueError, RecursionError) as err:  # huge integers, absurd nesting
            yield number, Malformed(f"invalid JSON: {err}", raw=line)
            continue
        if not isinstance(item, dict):
            yield number, Malformed(f"JSON line is a {type(item).__name__}, not an object", raw=line)
            continue
        half = _lone_surrogate(item) if _SURROGATE_ESCAPE.search(line) else None
        yield number, (Row(item, line) if half is None else Malformed(
            f"JSON escape \\u{ord(half):04x} is half of a UTF-16 surrogate pair, not a character",
            reason="bad_encoding", raw=line))


def _lone_surrogate(item: dict) -> str | None:
    """The first lone surrogate in a parsed JSON object's keys and strings, if any: a `\\ud800`
    escape without its other half parses, but is no character and cannot be written as UTF-8."""
    text = json.dumps(item, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return text[err.start]
    return None


class _RecordTooLong(Exception):
    """A quoted CSV field still open after MAX_RECORD_LINES lines or MAX_RECORD_CHARS chars."""


class _Lines:
    """The decoded lines a CSV parser reads through: those of the record being parsed
    (`taken`, emptied by `take`), and those to read again after a broken record (`replay`)."""

    def __init__(self, lines):
        self.source, self.replay = iter(lines), deque()
        self.taken: list[tuple[int, str, str | None]] = []
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self.replay.popleft() if self.replay else next(self.source, None)
            if item is None:
                return
            if self.taken and (len(self.taken) >= MAX_RECORD_LINES or self.chars >= MAX_RECORD_CHARS):
                self.replay.appendleft(item)
                raise _RecordTooLong
            self.taken.append(item)
            self.chars += len(item[1])
            yield item[1]

    def take(self) -> list[tuple[int, str, str | None]]:
        taken, self.taken, self.chars = self.taken, [], 0
        return taken


def csv_records(lines, delimiter: str
                ) -> Iterator[tuple[int, int, list[str] | None, str, str | None, str | None]]:
    """(first physical line, last physical line, cells (None on a CSV error), text as read,
    bad-encoding detail, CSV error) for every record, header and blank lines included: the
    (first, last) spans tile the file's lines, in order.

    A quoted field may span lines (legal CSV). The parser is strict: after a closing quote
    only a delimiter or the line end may follow, and the file may not end inside quotes. A
    record over several lines whose quoted field does not close properly (a CSV error on a
    later line, the end of the file, more than MAX_RECORD_LINES lines or MAX_RECORD_CHARS
    characters, more cells than the header) is a broken quote, not a record: its FIRST line
    (where the quote opened) comes out alone with the error, and parsing starts again at the
    line after it, so the lines it swallowed are read as records of their own."""
    feed = _Lines(lines)
    reader = csv.reader(iter(feed), delimiter=delimiter, strict=True)
    width = None  # the header's cells
    while True:
        cells, error = None, None
        try:
            cells = next(reader)
        except StopIteration:
            pass
        except csv.Error as err:
            error = str(err)
        except _RecordTooLong:
            error = (f"still open after {MAX_RECORD_LINES:,} lines"
                     if len(feed.taken) >= MAX_RECORD_LINES
                     else f"still open after {MAX_RECORD_CHARS:,} characters")
        taken = feed.take()
        if not taken:
            return
        first, last = taken[0][0], taken[-1][0]
        if error is not None:  # the parser stopped mid-record: the next record starts afresh
            reader = csv.reader(iter(feed), delimiter=delimiter, strict=True)
        if len(taken) > 1 and (error is not None or width is not None and len(cells) > width):
            if error is None:
                why = f"the record it starts has {len(cells)} cells, the header {width}, ending on line {last}"
            elif error == "unexpected end of data":
                why = f"it never closes (the file ends on line {last})"
            elif error.startswith("still open"):
                why = error
            else:
                why = f"{error} on line {last}"
            feed.replay.extendleft(reversed(taken[1:]))
            reader = csv.reader(iter(feed), delimiter=delimiter, strict=True)  # from line 2 of it
            number, text, bad = taken[0]
            yield number, number, None, _strip_eol(text), bad, (
                f"CSV: the quoted field opened on line {number} is broken: {why}; line {number} is "
                f"rejected and reading resumes at line {number + 1}")
            continue
        if width is None and cells is not None:
            width = len(cells)
        raw = "".join(text for _, text, _ in taken)
        bad = next((b for _, _, b in taken if b), None)
        yield first, last, cells, _strip_eol(raw), bad, None if error is None else f"CSV: {error}"


def _csv_rows(lines, delimiter: str) -> Iterator[tuple[int, Row | Malformed]]:
    header = None
    for number, _, cells, raw, bad, error in csv_records(lines, delimiter):
        if header is None:
            header = cells or []  # the file check refuses a bad header before a job runs
            continue
        if bad:
            yield number, Malformed(bad, reason="bad_encoding", raw=escape_bytes(raw))
        elif cells is None:
            yield number, Malformed(error, raw=raw)
        elif not cells:
            continue  # an empty line, as csv.DictReader skips it
        elif len(cells) > len(header):
            yield number, Malformed(f"CSV row has {len(cells)} cells, the header {len(header)}", raw=raw)
        else:
            yield number, Row(dict(zip(header, cells + [None] * (len(header) - len(cells)))), raw)


def parquet_footer(fileobj: IO[bytes]) -> pq.FileMetaData:
    """A Parquet file's metadata, reading only its footer (the metadata, its 4-byte length and
    the magic `PAR1` at the end); pyarrow alone would read the last 64 KiB. Leaves the file at 0."""
    size = fileobj.seek(0, io.SEEK_END)
    fileobj.seek(size - 8)
    end = fileobj.read(8)
    length = int.from_bytes(end[:4], "little")
    fileobj.seek(size - 8 - length)
    metadata = fileobj.read(length)
    fileobj.seek(0)
    return pq.read_metadata(pa.BufferReader(b"PAR1" + metadata + end))


def parquet_rows(fileobj: IO[bytes], footer: pq.FileMetaData | None = None
                 ) -> Iterator[tuple[int, Row | Malformed]]:
    """Rows in file order; with the `footer` already read the pages are the only bytes read."""
    row = 0
    for batch in pq.ParquetFile(fileobj, metadata=footer).iter_batches(batch_size=4096):
        try:
            items = batch.to_pylist()
        except UnicodeDecodeError:  # a string column holding bytes that are not UTF-8
            items = [_parquet_row(batch.slice(i, 1)) for i in range(batch.num_rows)]
        for item in items:
            row += 1
            yield row, item if isinstance(item, Malformed) else Row(item)


def _parquet_row(one: pa.RecordBatch) -> dict | Malformed:
    try:
        return one.to_pylist()[0]
    except UnicodeDecodeError:
        pass
    values: dict[str, Any] = {}
    problem = None
    for name, column in zip(one.schema.names, one.columns):
        try:
            values[name] = column.to_pylist()[0]
        except UnicodeDecodeError as err:
            problem = problem or (f"column {name!r} is not valid UTF-8: byte 0x{err.object[err.start]:02x}"
                                  f" at byte offset {err.start} ({err.reason})")
            raw = column.cast(pa.binary()).to_pylist()[0] if pa.types.is_string(column.type) else None
            values[name] = escape_bytes(raw.decode("utf-8", "surrogateescape")) if raw else "<not UTF-8>"
    return Malformed(problem, reason="bad_encoding",
                     raw=json.dumps(values, ensure_ascii=False, default=str))


def iter_rows(fileobj: IO[bytes], path: str, encoding: str = "utf-8",
              footer: pq.FileMetaData | None = None) -> Iterator[tuple[int, Row | Malformed]]:
    """Yield (line or row number, parsed row or Malformed) for every record of one file (a
    Parquet file's `footer` when it was read already)."""
    fmt = file_format(path)
    if fmt == "parquet":
        yield from parquet_rows(fileobj, footer)
        return
    lines = decoded_lines(decompressed(fileobj, path), encoding)
    if fmt == "jsonl":
        yield from jsonl_rows(lines)
        return
    yield from _csv_rows(lines, csv_delimiter(path))
