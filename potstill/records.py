"""Reading and validating input records: plain functions, used by the Beam job and the trainer.

A corpus file is Parquet, JSONL or CSV, chosen by extension (`.gz`/`.bz2` allowed for the text
formats). Every row read either becomes a `Record` or a `Rejection` with a machine-readable
reason and the file:row it came from, so input counts always reconcile.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, replace
from typing import IO, Any, Iterable, Iterator

import pyarrow.parquet as pq

FORMATS = ("parquet", "jsonl", "csv")
_WS = re.compile(r"\s+")
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
    # potstill.contract.row turns the record into the contract's columns at the writer
    values: tuple[tuple[str, Any], ...] = ()

    def with_values(self, **values: Any) -> "Record":
        return replace(self, values=self.values + tuple(values.items()))

    def value(self, name: str, default: Any = None) -> Any:
        return dict(self.values).get(name, default)

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


def _decompressed(fileobj: IO[bytes], path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=fileobj)
    if path.endswith(".bz2"):
        return bz2.BZ2File(fileobj)
    return fileobj


class Malformed(str):
    """A row that could not be parsed at all; the string is the reason detail."""


def iter_rows(fileobj: IO[bytes], path: str) -> Iterator[tuple[int, dict | Malformed]]:
    """Yield (1-based row number, raw mapping or Malformed) for every row of one file."""
    fmt = file_format(path)
    if fmt == "parquet":
        row = 0
        for batch in pq.ParquetFile(fileobj).iter_batches(batch_size=4096):
            for item in batch.to_pylist():
                row += 1
                yield row, item
        return
    text = io.TextIOWrapper(_decompressed(fileobj, path), encoding="utf-8", errors="replace", newline="")
    if fmt == "jsonl":
        row = 0
        for line in text:
            if not line.strip():
                continue
            row += 1
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                yield row, Malformed(f"invalid JSON: {err.msg} at column {err.colno}")
                continue
            yield row, item if isinstance(item, dict) else Malformed("JSON line is not an object")
        return
    delimiter = "\t" if path.lower().removesuffix(".gz").removesuffix(".bz2").endswith(".tsv") else ","
    for row, item in enumerate(csv.DictReader(text, delimiter=delimiter), start=1):
        if None in item:  # more cells than header columns
            yield row, Malformed("CSV row has more cells than the header")
        else:
            yield row, item


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
    """NFC, whitespace runs collapsed to one space, stripped: the form that is hashed and stored."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def stable_id(text: str) -> str:
    """Content hash of the normalised text; identical texts share an id across splits and runs."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _raw_json(raw: Any) -> str:
    try:
        out = json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        out = repr(raw)
    return out[:_RAW_LIMIT]


def validate(raw: dict | Malformed, *, source: str, input_ref: str, text_field: str,
             label_field: str | None = None, labels: Iterable[str] | None = None,
             bounds: Bounds = Bounds(), choices_field: str | None = None) -> Record | Rejection:
    """Turn one raw row into a Record, or a Rejection that says what is wrong with it.

    With `choices_field` (multiple choice) the row's options are read too: the labels are
    option letters, a row with n options may only have one of the first n as its answer, and
    the id hashes the question together with its options."""
    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(source, input_ref, reason, detail, _raw_json(raw))

    if isinstance(raw, Malformed):
        return reject("malformed_record", str(raw))
    value = raw.get(text_field)
    if value is None:
        return reject("missing_text", f"field {text_field!r} is missing or null")
    if not isinstance(value, str):
        return reject("non_string_text", f"field {text_field!r} is {type(value).__name__}, not a string")
    text = normalise_text(value)
    if not text:
        return reject("empty_text", f"field {text_field!r} is empty after whitespace normalisation")
    if len(text) < bounds.min_chars:
        return reject("text_too_short", f"{len(text)} chars < records.min_chars={bounds.min_chars}")
    if len(text) > bounds.max_chars:
        return reject("text_too_long", f"{len(text)} chars > records.max_chars={bounds.max_chars}")
    allowed = list(labels or [])
    choices = None
    if choices_field is not None:
        choices = parse_choices(raw.get(choices_field))
        if choices is None or not 2 <= len(choices) <= len(allowed) or not all(choices):
            return reject("bad_choices", f"field {choices_field!r} must hold 2 to {len(allowed)} "
                                         "non-empty option strings")
        allowed = allowed[: len(choices)]
    gold = None
    if label_field is not None:
        gold = raw.get(label_field)
        if gold is None or (isinstance(gold, str) and not gold.strip()):
            return reject("missing_label", f"field {label_field!r} is missing or empty")
        gold = str(gold).strip()
        if gold not in allowed:
            return reject("unknown_label", f"label {gold!r} is not one of {allowed}")
    return Record(stable_id(model_input(text, choices)), text, source, gold, input_ref,
                  choices=tuple(choices) if choices else None)


def expand(path: str) -> list[str]:
    """Files matching a path or glob, sorted; no match is an error naming the pattern."""
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(path)
    if not paths:
        raise FileNotFoundError(f"no input file matches {path!r}")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return sorted(p if protocol in ("file", "local") else f"{protocol}://{p}" for p in paths)


def read_split(path: str, *, source: str, text_field: str, label_field: str | None = None,
               labels: Iterable[str] | None = None, bounds: Bounds = Bounds(),
               choices_field: str | None = None) -> tuple[list[Record], list[Rejection]]:
    """Read and validate a whole split in-process (the trainer's test split, small inputs)."""
    import fsspec

    records, rejected = [], []
    labels = list(labels or [])
    for file in expand(path):
        with fsspec.open(file, "rb") as fh:
            for row, raw in iter_rows(fh, file):
                out = validate(raw, source=source, input_ref=f"{file}:{row}", text_field=text_field,
                               label_field=label_field, labels=labels, bounds=bounds,
                               choices_field=choices_field)
                (records if isinstance(out, Record) else rejected).append(out)
    return records, rejected


def read_configured(cfg, split: str) -> tuple[list[Record], list[Rejection]]:
    """Read `cfg.corpus.<split>` (seed or test) in-process, validated as the job validates it."""
    src = getattr(cfg.corpus, split)
    if src is None:
        raise FileNotFoundError(f"the config has no corpus.{split} split")
    return read_split(src.path, source=split, text_field=src.text_field,
                      label_field=src.label_field, labels=cfg.task.labels,
                      bounds=Bounds(cfg.records.min_chars, cfg.records.max_chars),
                      choices_field=src.choices_field)
