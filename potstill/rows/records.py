"""Reading and validating input records: plain functions, used by the Beam job and the trainer.

A corpus file is Parquet, JSONL or CSV, chosen by extension (`.gz`/`.bz2` allowed for the text
formats; potstill.rows.readers turns its bytes into rows). Every row read either becomes a `Record`
or a `Rejection` with a machine-readable reason, the detail in words, the record as read
(`raw`, cut at 2,000 chars with a marker) and where it came from (`file:line` for text
formats, physical 1-based lines; `file:row` for Parquet), so input counts always reconcile.

Problems with a whole file (missing, a directory, empty, corrupt or truncated, not the
compression its name says, a required column absent) are not rows: `check_input_files` raises
InputFileError for them before any model loads, and the job stops (exit 2).
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from potstill.rows.readers import (HashingReader, Malformed, Row, check_encoding,  # noqa: F401
                              compression, csv_delimiter, csv_records, decoded_lines,
                              decompressed, file_format, iter_rows, jsonl_rows,
                              parquet_footer)

FORMATS = ("parquet", "jsonl", "csv")
_WS = re.compile(r"\s+")
# Default_Ignorable_Code_Point, from Unicode's DerivedCoreProperties.txt (the same set from
# Unicode 14 to 17; a test compares it with the `regex` module's): characters that render as
# nothing where they are not supported.
_IGNORABLE_RANGES = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
                     (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
                     (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
                     (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
                     (0xE0000, 0xE0FFF))
IGNORABLE = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _IGNORABLE_RANGES) + "]")
_RAW_LIMIT = 2000


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    source: str              # seed | corpus | generated | test
    gold_label: str | None
    input_ref: str           # path:row
    intended_label: str | None = None  # generated rows: the label the generator was asked for
    choices: tuple[str, ...] | None = None  # multiple-choice rows: the options, in letter order
    # what the stages add as the record travels (student and TA signals, the teacher's scores,
    # the rationale, a filter reason), as (name, value) pairs, later ones winning;
    # potstill.publish.contract.row turns the record into the contract's columns at the writer
    values: tuple[tuple[str, Any], ...] = ()

    def __reduce__(self):
        # Pickled field values in order, without the field names: how runners move records
        # between steps (Beam's coder for Python objects), ~30% fewer bytes and 2x faster
        return Record, self._fields()

    def _fields(self) -> tuple:
        return (self.id, self.text, self.source, self.gold_label, self.input_ref,
                self.intended_label, self.choices, self.values)

    def with_values(self, **values: Any) -> "Record":
        # the constructor, not dataclasses.replace: every stage calls this for every row
        return Record(*self._fields()[:-1], self.values + tuple(values.items()))

    def value(self, name: str, default: Any = None) -> Any:
        for key, value in reversed(self.values):  # the last one set wins
            if key == name:
                return value
        return default

    @property
    def model_input(self) -> str:
        return model_input(self.text, self.choices)


@dataclass(frozen=True)
class Rejection:
    source: str
    input_ref: str
    reason: str
    detail: str | None
    raw: str | None

    def to_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Bounds:
    min_chars: int = 1
    max_chars: int = 20_000


def model_input(text: str, choices=None) -> str:
    """What every model (teacher, TA, student) reads for a row: the text, followed by the
    lettered options on multiple-choice rows. The one place the model input is built."""
    return with_choices(text, choices) if choices else text


def with_choices(text: str, choices) -> str:
    """`question\nA) first\nB) second ...`: the form the teacher and the student read."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return text + "".join(f"\n{letters[i]}) {c}" for i, c in enumerate(choices))


def parse_choices(value: Any) -> list[str] | None:
    """A list of option strings, or an ARC-style {"text": [...], ...} mapping; None if neither."""
    if isinstance(value, dict):
        value = value.get("text")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) for c in value):
        return None
    return [normalise_text(c) for c in value]


def normalise_text(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, stripped: the form that is stored (and read
    by the models). Invisible characters stay: texts are compared by `dedup_key`."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def dedup_key(text: str) -> str:
    """The form texts are compared in, the one place it is built: what `stable_id` hashes, so
    dedup, the test-leak guard and generation's exact-duplicate check all use it, and what
    must be non-empty (`empty_text`). NFKC (full-width letters, ligatures, compatibility
    spaces and digits become their plain forms), Unicode's Default_Ignorable_Code_Point
    characters removed (`IGNORABLE`: zero-width spaces and joiners, soft hyphens, BOMs, bidi
    controls, variation selectors, tags, Hangul fillers), whitespace runs folded to one space,
    stripped; case is kept. Repeated until nothing changes (removing a character can make a
    pair composable, and NFKC maps two Hangul fillers onto an ignorable one)."""
    while True:
        key = _WS.sub(" ", IGNORABLE.sub("", unicodedata.normalize(
            "NFKC", IGNORABLE.sub("", text)))).strip()
        if key == text:
            return key
        text = key


def did_you_mean(value: str, allowed: Sequence[str]) -> str | None:
    """The allowed label `value` differs from only by case or spaces (`Account` for `account`,
    `credit card` for `credit_card`), if exactly one does."""
    def fold(s: str) -> str:
        return "".join(ch for ch in s.casefold() if not ch.isspace() and ch not in "_-")
    near = [a for a in allowed if fold(a) == fold(value)]
    return near[0] if len(near) == 1 else None


def stable_id(text: str) -> str:
    """Content hash of the text's `dedup_key`: texts that differ only in invisible characters,
    compatibility forms or whitespace share an id across splits and runs."""
    return hashlib.sha256(dedup_key(text).encode("utf-8")).hexdigest()[:16]


def evidence(raw: str | None) -> tuple[str | None, str]:
    """The record as read, cut to its first 2,000 characters with a marker, and a note for the
    rejection's detail saying so ("" when nothing was cut)."""
    if raw is None or len(raw) <= _RAW_LIMIT:
        return raw, ""
    return (raw[:_RAW_LIMIT] + f"…[truncated: {len(raw):,} chars in all]",
            f" (raw truncated to its first {_RAW_LIMIT:,} of {len(raw):,} chars)")


def _raw_text(raw: Any) -> str | None:
    """What was read: the line(s) for text formats, the row as JSON for Parquet."""
    if isinstance(raw, (Row, Malformed)) and raw.raw is not None:
        return raw.raw
    if isinstance(raw, Malformed):
        return None
    try:
        return json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(raw)


def validate(raw: dict | Malformed, *, source: str, input_ref: str, text_field: str,
             label_field: str | None = None, labels: Iterable[str] | None = None,
             bounds: Bounds = Bounds(), choices_field: str | None = None) -> Record | Rejection:
    """Turn one raw row into a Record, or a Rejection that says what is wrong with it.

    With `choices_field` (multiple choice) the row's options are read too: the labels are
    option letters, a row with n options may only have one of the first n as its answer, and
    the id hashes the question together with its options.

    Labels: a string label is compared with surrounding whitespace stripped (like the text, it
    is formatting, not meaning: "positive " is "positive"); an integer label by its decimal
    form (1 is "1"); any other type (float, bool, list, object) is an unknown label."""
    def reject(reason: str, detail: str) -> Rejection:
        kept, note = evidence(_raw_text(raw))
        return Rejection(source, input_ref, reason, detail + note, kept)

    if isinstance(raw, Malformed):
        return reject(raw.reason, str(raw))
    value = raw.get(text_field)
    if value is None:
        return reject("missing_text", f"field {text_field!r} is missing or null")
    if not isinstance(value, str):
        return reject("non_string_text", f"field {text_field!r} is {type(value).__name__}, not a string")
    if "\x00" in value:  # never text: binary or UTF-16 data read as text; breaks C-string tools
        return reject("nul_character", f"field {text_field!r} contains NUL (U+0000) at "
                                       f"character {value.index(chr(0))}")
    text = normalise_text(value)
    visible = len(dedup_key(text))  # min_chars counts what a reader sees; max_chars what is stored
    if not visible:
        return reject("empty_text", f"field {text_field!r} is empty after normalisation (only "
                                    "whitespace or invisible characters)")
    if visible < bounds.min_chars:
        return reject("text_too_short", f"{visible} visible chars < records.min_chars={bounds.min_chars}")
    if len(text) > bounds.max_chars:
        return reject("text_too_long", f"{len(text):,} chars > records.max_chars={bounds.max_chars}")
    allowed = list(labels or [])
    choices = None
    if choices_field is not None:
        choices = parse_choices(raw.get(choices_field))
        if choices is None or not 2 <= len(choices) <= len(allowed) or not all(map(dedup_key, choices)):
            return reject("bad_choices", f"field {choices_field!r} must hold 2 to {len(allowed)} "
                                         "non-empty option strings")
        allowed = allowed[: len(choices)]
    gold = None
    if label_field is not None:
        gold = raw.get(label_field)
        if gold is None or (isinstance(gold, str) and not gold.strip()):
            return reject("missing_label", f"field {label_field!r} is missing or empty")
        if isinstance(gold, bool) or not isinstance(gold, (str, int)):
            return reject("unknown_label", f"label {gold!r} is a {type(gold).__name__}: labels are "
                                           f"strings or integers, one of {allowed}")
        gold = str(gold).strip()
        if gold not in allowed:
            near = did_you_mean(gold, allowed)
            return reject("unknown_label", f"label {gold!r} is not one of {allowed}"
                                           + (f": did you mean {near!r}?" if near else ""))
    return Record(stable_id(model_input(text, choices)), text, source, gold, input_ref,
                  choices=tuple(choices) if choices else None)


# -- whole files: checked before any model loads (the job's plan step) -----------------------

class InputFileError(ValueError):
    """A corpus file that cannot be used as a whole: one message naming the file and why."""


class MissingInputError(InputFileError, FileNotFoundError):
    """A corpus path or glob that matches no file."""


_MAGIC = {"gz": b"\x1f\x8b", "bz2": b"BZh"}


def expand(path: str) -> list[str]:
    """Files matching a path or glob, sorted; no match is an error naming the pattern."""
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(path)
    if not paths:
        raise MissingInputError(f"no input file matches {path!r}")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return sorted(p if protocol in ("file", "local") else f"{protocol}://{p}" for p in paths)


def _names(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f", ... ({len(names):,} in all)" if len(names) > limit else "")


def _missing(path: str, required: Sequence[str], has: Sequence[str], what: str) -> None:
    missing = [f for f in required if f not in has]
    if missing:
        raise InputFileError(f"{path}: no {what} {_names(missing)} (it has: {_names(has) or 'none'})")


def _check_parquet(fh, path: str, required: Sequence[str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fh)
        _missing(path, required, pf.schema_arrow.names, "column")
        for _ in pf.iter_batches(batch_size=65536):  # every page decodes: not cut short inside
            pass
    except (pa.ArrowException, OSError, ValueError) as err:
        if isinstance(err, InputFileError):
            raise
        raise InputFileError(f"{path}: not a readable Parquet file (truncated or corrupt): {err}") from None
    return pf.metadata.num_rows


def _check_text(open_file, path: str, fmt: str, required: Sequence[str], encoding: str) -> int:
    kind = compression(path)
    if kind:  # the whole stream decompresses, to its end marker
        with open_file() as fh:
            magic = fh.read(len(_MAGIC[kind]))
            if magic != _MAGIC[kind]:
                raise InputFileError(f"{path}: not a .{kind} file (it starts with {magic!r}): "
                                     f"decompress it or drop the .{kind} suffix")
        with open_file() as fh, decompressed(fh, path) as stream:
            size = 0
            while chunk := stream.read(1 << 20):
                size += len(chunk)
        if size == 0:
            raise InputFileError(f"{path}: is empty (0 bytes after decompression)")
    with open_file() as fh:
        lines = decoded_lines(decompressed(fh, path), encoding)
        if fmt == "csv":
            records = csv_records(lines, csv_delimiter(path))
            _, _, header, _, bad, error = next(records, (0, 0, [], "", None, None))
            if bad or error:
                raise InputFileError(f"{path}: unreadable header line: {bad or error}")
            _missing(path, required, header, "column")
            twice = [f for f in required if header.count(f) > 1]
            if twice:
                raise InputFileError(f"{path}: column(s) {_names(twice)} appear more than once")
            return int(any(cells != [] for _, cells, *_ in records))
        rows, seen = 0, set()
        for _, item in jsonl_rows(lines):
            rows += 1
            if isinstance(item, Row):
                seen.update(item)
                if all(f in seen for f in required):
                    return rows
        if seen:  # JSON objects were read, and none has a required field
            absent = [f for f in required if f not in seen]
            raise InputFileError(f"{path}: no row has the field(s) {_names(absent)} "
                                 f"(fields seen: {_names(sorted(seen))})")
        return rows


def check_file(path: str, required: Sequence[str] = (), encoding: str = "utf-8") -> int:
    """Check one corpus file as a whole; returns 0 when it has no rows, else a positive count
    (the scan stops early where it can). Raises InputFileError naming the file: missing, a
    directory, empty, an unknown type, corrupt or truncated Parquet or compression, a required
    column absent (naming those it has), a CSV header not valid in the encoding."""
    import fsspec

    fs, plain = fsspec.core.url_to_fs(path)
    if not fs.exists(plain):
        raise MissingInputError(f"{path}: no such file")
    if fs.isdir(plain):
        raise InputFileError(f"{path}: is a directory, not a file (name its files with a glob, "
                             f"e.g. {path.rstrip('/')}/*.jsonl)")
    try:
        fmt = file_format(path)
    except ValueError as err:
        raise InputFileError(str(err)) from None
    if fs.size(plain) == 0:
        raise InputFileError(f"{path}: is empty (0 bytes)")
    try:
        if fmt == "parquet":
            with fs.open(plain, "rb") as fh:
                return _check_parquet(fh, path, required)
        return _check_text(lambda: fs.open(plain, "rb"), path, fmt, required, encoding)
    except PermissionError as err:
        raise InputFileError(f"{path}: cannot be read ({err.strerror})") from None
    except (OSError, EOFError, zlib.error) as err:  # gzip/bz2: a corrupt or truncated stream
        if isinstance(err, InputFileError):
            raise
        raise InputFileError(f"{path}: cannot be decompressed as .{compression(path) or fmt} "
                             f"(truncated or corrupt): {err}") from None


def check_split(src, where: str, *, labelled: bool) -> int:
    """Check every file of one configured split (a `Source`); errors name the split too."""
    required = [f for f in (src.text_field, src.label_field if labelled else None,
                            src.choices_field) if f]
    try:
        return sum(check_file(f, required, src.encoding) for f in expand(src.path))
    except InputFileError as err:
        raise type(err)(f"{where}: {err}") from None


def check_input_files(cfg) -> None:
    """Stop the job before any model loads when an input file is unusable as a whole, or when
    the corpus to label (unlabeled + seed) has no rows at all. Row-level problems never stop
    the job: those rows are rejected with a reason."""
    rows = {}
    for split in ("unlabeled", "seed", "test"):
        src = getattr(cfg.corpus, split)
        if src is not None:
            rows[split] = check_split(src, f"corpus.{split}", labelled=split != "unlabeled")
    if rows["unlabeled"] + rows.get("seed", 0) == 0:
        paths = " and ".join(f"corpus.{s} ({getattr(cfg.corpus, s).path})"
                             for s in ("unlabeled", "seed") if s in rows)
        raise InputFileError(f"the corpus is empty: {paths} hold no rows")


def read_split(path: str, *, source: str, text_field: str, label_field: str | None = None,
               labels: Iterable[str] | None = None, bounds: Bounds = Bounds(),
               choices_field: str | None = None, encoding: str = "utf-8"
               ) -> tuple[list[Record], list[Rejection]]:
    """Read and validate a whole split in-process (the trainer's test split, small inputs),
    each file checked as a whole first (`check_file`)."""
    records, rejected = [], []
    required = [f for f in (text_field, label_field, choices_field) if f]
    for file in expand(path):
        check_file(file, required, encoding)
        got, bad, _ = read_file(file, source=source, text_field=text_field, label_field=label_field,
                                labels=labels, bounds=bounds, choices_field=choices_field,
                                encoding=encoding)
        records += got
        rejected += bad
    return records, rejected


def read_file(file: str, *, source: str, text_field: str, label_field: str | None = None,
              labels: Iterable[str] | None = None, bounds: Bounds = Bounds(),
              choices_field: str | None = None, encoding: str = "utf-8"
              ) -> tuple[list[Record], list[Rejection], dict]:
    """Read, validate and hash one input file in one pass over its bytes: its records, its
    rejections and its digest {path, sha256, bytes, rows} (what `potstill.job.plan`
    fingerprints), the rows parsed from the very reads that hash them. A Parquet file's footer
    (its schema) is read first, then its pages once, in file order."""
    import fsspec

    records, rejected = [], []
    labels = list(labels or [])
    with fsspec.open(file, "rb") as fh:
        footer = parquet_footer(fh) if file_format(file) == "parquet" else None
        stream = HashingReader(fh)
        for row, raw in iter_rows(stream, file, encoding, footer):
            out = validate(raw, source=source, input_ref=f"{file}:{row}", text_field=text_field,
                           label_field=label_field, labels=labels, bounds=bounds,
                           choices_field=choices_field)
            (records if isinstance(out, Record) else rejected).append(out)
        stream.drain()  # whatever the parser left unread (a Parquet footer) still counts
    digest = {"path": file, "sha256": stream.sha.hexdigest(), "bytes": stream.hashed,
              "rows": len(records) + len(rejected)}
    return records, rejected, digest


def read_configured(cfg, split: str) -> tuple[list[Record], list[Rejection]]:
    """Read `cfg.corpus.<split>` (seed or test) in-process, validated as the job validates it."""
    src = getattr(cfg.corpus, split)
    if src is None:
        raise FileNotFoundError(f"the config has no corpus.{split} split")
    return read_split(src.path, source=split, text_field=src.text_field,
                      label_field=src.label_field, labels=cfg.task.labels,
                      bounds=Bounds(cfg.records.min_chars, cfg.records.max_chars),
                      choices_field=src.choices_field, encoding=src.encoding)
