"""Staged Parquet shards written from a DoFn, one file per bundle (or per `rows_per_file` rows).

Beam's WriteToParquet finalises its files through side inputs and a final singleton step; Beam's
DaskRunner computes only the graph's last leaf and evaluates side inputs inside worker tasks, and
wrote an empty file with it. Writing from a plain DoFn needs nothing but ParDo, so the same graph
runs on every runner. Each file is written under a temporary name and then renamed (as the
teacher store's segments are: potstill/store.py), and named by the SHA-256 of its bytes: a
bundle a runner retries with the same rows overwrites its own file instead of adding a second
copy, and a reader never sees half a file. Two different bundles cannot share a name: their
rows carry unique ids (scored, keys) or input references (rejected), and the duplicates a
filtered shard repeats are emitted by one DoFn call, so they travel in one bundle. The DoFn yields each file's row count, so a last step
can depend on every writer (`Done` in beam_pipelines/graph.py).
"""
from __future__ import annotations

import hashlib
import io
from typing import Callable

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

ROWS_PER_FILE = 50_000  # bounds a writer's buffer; the curation reads any number of files


def write_shard(folder: str, prefix: str, table: pa.Table) -> str:
    """Write one shard atomically (temporary name, then rename); returns its path."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    fs, _, (path,) = fsspec.get_fs_token_paths(folder)
    name = f"{prefix}-{hashlib.sha256(data).hexdigest()[:32]}"
    tmp, final = f"{path}/.tmp-{name}.parquet", f"{path}/{name}.parquet"
    try:
        fs.makedirs(path, exist_ok=True)
        with fs.open(tmp, "wb") as fh:
            fh.write(data)
        fs.mv(tmp, final)
    except OSError as err:
        # A full disk fails the write or the close, whose errors name no file. One message
        # argument: Beam re-raises the same type with the step added (an errno would make it
        # a RuntimeError, reported as a bug).
        raise OSError(f"cannot write the staged rows in {path} ({type(err).__name__}: {err})") from None
    return final


class _WriteRows(beam.DoFn):
    def __init__(self, folder: str, prefix: str, schema: pa.Schema, rows_per_file: int):
        self.folder, self.prefix, self.schema = folder, prefix, schema
        self.rows_per_file = rows_per_file

    def start_bundle(self):
        self.rows = []

    def process(self, row: dict):
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_file:
            yield self._flush()

    def finish_bundle(self):
        if self.rows:
            from apache_beam.transforms.window import GlobalWindow
            from apache_beam.utils.windowed_value import WindowedValue

            yield WindowedValue(self._flush(), 0, [GlobalWindow()])

    def _flush(self) -> int:
        n = len(self.rows)
        write_shard(self.folder, self.prefix, pa.Table.from_pylist(self.rows, schema=self.schema))
        self.rows = []
        return n


class WriteShards(beam.PTransform):
    """dict rows (or values `to_row(value, *args)` turns into rows) -> Parquet files
    `{folder}/{prefix}-<sha>.parquet`; outputs the row count of each file written."""

    def __init__(self, folder: str, prefix: str, schema: pa.Schema,
                 to_row: Callable | None = None, *args, rows_per_file: int = ROWS_PER_FILE):
        super().__init__()
        self.folder, self.prefix, self.schema = folder, prefix, schema
        self.to_row, self.args, self.rows_per_file = to_row, args, rows_per_file

    def expand(self, pcoll):
        if self.to_row is not None:
            pcoll = pcoll | "Rows" >> beam.Map(self.to_row, *self.args)
        return pcoll | "Write" >> beam.ParDo(
            _WriteRows(self.folder, self.prefix, self.schema, self.rows_per_file))
