"""Read one corpus split with Beam file IO: every row becomes a Record or a rejected row."""
from __future__ import annotations

import io
from typing import Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from potstill.rows.records import Bounds, Rejection, file_format, iter_rows, validate

REJECTED = "rejected"


class ParseFile(beam.DoFn):
    """Parse one matched file; valid rows go to the main output, the rest to `rejected`."""

    def __init__(self, source: str, text_field: str, label_field: str | None,
                 labels: list[str], bounds: Bounds, choices_field: str | None = None,
                 encoding: str = "utf-8"):
        self.source, self.text_field, self.label_field = source, text_field, label_field
        self.choices_field, self.encoding = choices_field, encoding
        self.labels, self.bounds = list(labels), bounds
        self.read = Metrics.counter("potstill", f"read_{source}")
        self.rejected = Metrics.counter("potstill", f"rejected_{source}")

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        try:  # one message argument: Beam keeps an OSError an OSError (exit 2, not a bug)
            opened = readable.open(compression_type=CompressionTypes.UNCOMPRESSED)
        except OSError as err:
            raise OSError(f"cannot read {path} ({type(err).__name__}: {err.strerror or err})") from None
        # Compression is handled by iter_rows by extension; Parquet needs a seekable file.
        with opened as fh:
            if file_format(path) == "parquet" and not fh.seekable():
                fh = io.BytesIO(fh.read())
            for row, raw in iter_rows(fh, path, self.encoding):
                self.read.inc()
                out = validate(raw, source=self.source, input_ref=f"{path}:{row}",
                               text_field=self.text_field, label_field=self.label_field,
                               labels=self.labels, bounds=self.bounds,
                               choices_field=self.choices_field)
                if isinstance(out, Rejection):
                    self.rejected.inc()
                    Metrics.counter("potstill", f"rejected_{out.reason}").inc()
                    yield beam.pvalue.TaggedOutput(REJECTED, out.to_row())
                else:
                    yield out


class ReadSplit(beam.PTransform):
    """pattern -> Records (main output) and rejected rows (`rejected` output)."""

    def __init__(self, pattern: str, source: str, text_field: str, label_field: str | None = None,
                 labels: list[str] | None = None, bounds: Bounds = Bounds(),
                 choices_field: str | None = None, encoding: str = "utf-8"):
        super().__init__()
        self.pattern = pattern
        self.parse = ParseFile(source, text_field, label_field, labels or [], bounds, choices_field,
                               encoding)

    def expand(self, pbegin):
        return (pbegin
                | "Match" >> fileio.MatchFiles(self.pattern)
                | "Open" >> fileio.ReadMatches()
                | "Parse" >> beam.ParDo(self.parse).with_outputs(REJECTED, main="records"))


class ReadSplits(beam.PTransform):
    """Several splits (each a `ReadSplit`) -> Records (main output) and rejected rows
    (`rejected`), read by one step. Their records are one PCollection without a Flatten: Beam's
    in-process runner holds a Flatten of several inputs whole in memory (a corpus's worth of
    records at once) before the step after it starts."""

    def __init__(self, splits: Sequence[ReadSplit]):
        super().__init__()
        self.patterns = [s.pattern for s in splits]
        self.parses = [s.parse for s in splits]

    def expand(self, pbegin):
        return (pbegin
                | "Splits" >> beam.Create(list(range(len(self.patterns))))
                | "Match" >> beam.FlatMap(_matched, self.patterns)
                | "Parse" >> beam.ParDo(_ParseSplitFile(self.parses)).with_outputs(REJECTED, main="records"))


def _matched(split: int, patterns: list[str]):
    """(split, file metadata) of every file the split's pattern matches; a pattern without a
    wildcard must match its file (as `fileio.MatchFiles` requires by default)."""
    pattern = patterns[split]
    (result,) = FileSystems.match([pattern])
    if not result.metadata_list and not any(c in pattern for c in "*?["):
        raise OSError(f"cannot read {pattern} (no such file)")
    for metadata in result.metadata_list:
        yield split, metadata


class _ParseSplitFile(beam.DoFn):
    """(split, file metadata) -> that split's `ParseFile` on the file."""

    def __init__(self, parses: Sequence[ParseFile]):
        self.parses = list(parses)

    def process(self, item):
        split, metadata = item
        yield from self.parses[split].process(fileio.ReadableFile(metadata))
