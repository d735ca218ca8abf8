"""Read one corpus split with Beam file IO: every row becomes a Record or a rejected row."""
from __future__ import annotations

import io

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
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

