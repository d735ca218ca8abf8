"""The teacher store: every answer the teacher gave, kept so that no request is ever paid twice.

Layout, under `OUTPUT_ROOT/.potstill-store/` (any fsspec path the workers can reach):

    teacher/<model sha256[:16]>/<uuid>.parquet     one segment per scored batch
    teacher/<model sha256[:16]>/<run>-<uuid>.parquet    the same, written by a run's teacher stage
    leases/<uuid>.json                             one per run (or gc) in progress (`run_lease`)

A segment holds (`key`, `answer`, `prompt_tokens`, `created_at`): `key` is the SHA-256 of what
determines the answer (the weights' SHA-256, the prompt's token ids, the candidate answers'
token ids; `request_key`), `answer` the raw candidate log-probabilities the model returned,
BEFORE verbalizer sums, option masks and calibration, so changing any of those (or the audit,
or curation) re-queries nothing.

A segment the teacher stage writes (one canonical batch) also records, in its Parquet metadata
(`USAGE_META`), what answering it cost and which run it was for (`WriteUsage`), and its name
starts with that run's id: after the pipeline the driver sums its own run's records
(`TeacherStore.run_usage`), so the manifest's `teacher_usage` is the same on every runner,
whether or not it reports Beam metrics. A batch whose every row failed still writes its segment,
with no answers, to keep its record. Segments without a record (the audit's, gc's rewrites,
older ones) read as before: the record is metadata, not a column.

Why segments and not a database: several Beam workers on several machines write at once, and a
shared SQLite or DuckDB file on a network or object filesystem is neither safe nor reachable.
A segment is written under a temporary name and renamed (an atomic PUT on object stores), never
modified afterwards: the store is append-only, a crash loses at most the batch in flight, and
readers never see half a segment. The graph looks a store of up to a few million answers up
from memory (`Answers`: ~190 bytes an answer, once per worker process) and joins a larger one
to the rows by `key` (a CoGroupByKey), so no worker needs more than that in memory. Duplicate
keys (two workers answering the same request in a race) are harmless: the answers are the same
request's.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Sequence

import fsspec
from fsspec.implementations.local import LocalFileSystem
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

STORE_DIR = ".potstill-store"
KEYS_SCHEMA = pa.schema([("key", pa.string())])  # a version's teacher_keys.parquet
KEYS_FILE = "teacher_keys.parquet"
SCHEMA = pa.schema([("key", pa.string()), ("answer", pa.list_(pa.float64())),
                    ("prompt_tokens", pa.int32()), ("created_at", pa.float64())])
ANSWER_COLUMNS = pa.schema([SCHEMA.field("key"), SCHEMA.field("answer")])  # what lookups read
USAGE_META = b"potstill.usage"  # a segment's `WriteUsage`, as JSON, in its Parquet metadata


@dataclass(frozen=True)
class WriteUsage:
    """What the teacher stage spent on the rows of one segment (one canonical batch)."""
    run: str                   # the teacher stage's run id (transforms/teacher.py)
    rows: int = 0              # rows sent to the model, failed ones included
    rows_failed: int = 0       # rows given up (rejected as teacher_error)
    calls: int = 0             # rows sent, every attempt counted (remote: see `remote`)
    retries: int = 0           # batches (or halves) tried again after a failure
    prompt_tokens: int = 0     # the rows' prompt tokens, each row once
    seconds: float = 0.0       # the model's time on the batch
    remote: dict = field(default_factory=dict)  # a remote backend's HTTP counts (`take_usage`)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_metadata(cls, metadata: dict | None) -> "WriteUsage | None":
        """The record in a segment's metadata; None for a segment without one (or unreadable)."""
        raw = (metadata or {}).get(USAGE_META)
        try:
            info = json.loads(raw) if raw else None
            return cls(**{f.name: info[f.name] for f in fields(cls) if f.name in info}) \
                if isinstance(info, dict) and isinstance(info.get("run"), str) else None
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class TeacherStore:
    """One teacher's answers: the folder they live in and what its request keys start from.

    Built once by the driver (`potstill.models.teacher.backends.open_store` knows the teacher's
    identity) and handed, inside the teacher setup, to everything that asks the teacher: the
    audit's lookups, `potstill plan`'s count of what is already answered, the Beam join
    (`segments`) and the workers' writes. `folder` is None for a teacher whose answers are not
    kept (the teaching assistant); its keys are still well defined."""
    source: str                   # `answer_source`: weights SHA-256 (+ dtype), or a remote identity
    folder: str | None = None     # OUTPUT_ROOT/.potstill-store/teacher/<identity[:16]>

    @classmethod
    def open(cls, output_root: str, identity: str, dtype: str = "float32") -> "TeacherStore":
        return cls(answer_source(identity, dtype), model_dir(output_root, identity))

    def key(self, prompt_ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> str:
        return request_key(self.source, prompt_ids, candidates)

    def segments(self) -> list[str]:
        return segments(self.folder) if self.folder else []

    def keys(self) -> set[str]:
        """Every key answered so far."""
        return {key for seg in self.segments() for key, _ in read_segment(seg)}

    def answered(self, keys: Sequence[str]) -> set[str]:
        """Those of `keys` the store answers (read into one `Answers` table, not a set of every
        stored key)."""
        keys = list(keys)
        return {k for k, a in zip(keys, Answers(self.segments()).get_many(keys)) if a is not None}

    def index(self) -> "Index":
        return Index(self.folder)

    def write(self, keys: Sequence[str], answers: Sequence[Sequence[float]],
              prompt_tokens: Sequence[int], usage: WriteUsage | None = None) -> str:
        return write_segment(self.folder, keys, answers, prompt_tokens, usage)

    def run_usage(self, run: str) -> tuple[list[WriteUsage], pa.Array]:
        return run_usage(self.folder, run) if self.folder else ([], pa.array([], pa.string()))

    def check_writable(self) -> None:
        """Create the folder and write, then remove, a probe file: a store that cannot keep the
        teacher's answers stops the job here, before any model loads (StoreError names it)."""
        try:
            fs, _, (path,) = fsspec.get_fs_token_paths(self.folder)
            fs.makedirs(path, exist_ok=True)
            probe = f"{path}/.tmp-probe-{uuid.uuid4().hex}"
            with fs.open(probe, "wb") as fh:
                fh.write(b"potstill")
            fs.rm(probe)
        except OSError as err:
            raise StoreError.unwritable(self.folder, err) from None


class StoreError(OSError):
    """The teacher store cannot keep answers: a problem the user fixes (exit 2)."""

    @classmethod
    def unwritable(cls, folder: str, err: BaseException) -> "StoreError":
        return cls(f"the teacher store {folder} cannot be written ({type(err).__name__}: {err}): "
                   "every answer would be lost. Make it writable or choose another output_root.")


def request_key(model_sha256: str, prompt_ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> str:
    """What determines a label-scoring answer, hashed: never the row's position or batch. The
    SHA-256 of `json.dumps([model_sha256, prompt_ids, candidates], separators=(",", ":"))`,
    hashed in three parts: the JSON before the prompt's ids and after them are the same for
    every row of a teacher (`_key_ends`, kept), so a row costs its ids' digits only."""
    head, tail = _key_ends(model_sha256, tuple(map(tuple, candidates)))
    digest = head.copy()
    digest.update(",".join(map(str, prompt_ids)).encode())
    digest.update(tail)
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _key_ends(model_sha256: str, candidates: tuple[tuple[int, ...], ...]) -> tuple[Any, bytes]:
    """(SHA-256 fed with the key's JSON up to the prompt's first id, the JSON after its last)."""
    head = json.dumps([model_sha256], separators=(",", ":"))[:-1] + ",["
    tail = "]," + json.dumps([list(c) for c in candidates], separators=(",", ":")) + "]"
    return hashlib.sha256(head.encode()), tail.encode()


def answer_source(model_sha256: str, dtype: str = "float32") -> str:
    """What a teacher's numbers come from, as the first part of its request keys: the weights'
    SHA-256, plus the dtype they run in when it is not float32 (int8 or bfloat16 answers are
    never served for a float32 request, nor the reverse; float32 keys stay what they were)."""
    if dtype == "float32" or not model_sha256 or model_sha256.endswith(f":{dtype}"):
        return model_sha256  # idempotent: a setup rebuilt from a setup keeps its source
    return f"{model_sha256}:{dtype}"


def root(output_root: str) -> str:
    return f"{str(output_root).rstrip('/')}/{STORE_DIR}"


def model_dir(output_root: str, model_sha256: str) -> str:
    return f"{root(output_root)}/teacher/{model_sha256[:16]}"


def segments(folder: str) -> list[str]:
    """The finished segments under `folder` (temporary `.tmp-*` files are not segments)."""
    fs, _, (path,) = fsspec.get_fs_token_paths(folder)
    if not fs.exists(path):
        return []
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found = [p for p in fs.find(path) if p.endswith(".parquet") and "/.tmp-" not in p]
    return sorted(p if protocol in ("file", "local") else f"{protocol}://{p}" for p in found)


def answer_count(paths: Sequence[str], more_than: int | None = None) -> int:
    """How many answers the segments `paths` hold, from their Parquet footers; stops counting
    once past `more_than`."""
    def rows(path: str) -> int:
        try:
            with _open(path) as fh:
                return pq.read_metadata(fh).num_rows
        except (OSError, pa.ArrowException) as err:
            raise _unreadable(path, err) from None

    total = 0
    for counts in _read_many(rows, paths):
        total += sum(counts)
        if more_than is not None and total > more_than:
            break
    return total


def _read_many(read, paths: Sequence[str], threads: int = 8, chunk: int = 512):
    """`read` of each of `paths`, `threads` at a time (object stores: one request a segment),
    yielded as a list per `chunk` paths, in order: a caller may stop between chunks, and holds
    at most a chunk's results at once."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for at in range(0, len(paths), chunk):
            yield list(pool.map(read, paths[at:at + chunk]))


def write_segment(folder: str, keys: Sequence[str], answers: Sequence[Sequence[float]],
                  prompt_tokens: Sequence[int], usage: WriteUsage | None = None) -> str:
    """Append one segment (write under a temporary name, then rename); returns its path. With
    `usage`, the segment keeps it in its metadata and its name starts with `usage.run`."""
    fs, path = _filesystem(folder)
    name, schema = uuid.uuid4().hex, SCHEMA
    if usage is not None:
        if not usage.run.isalnum():
            raise ValueError(f"a run id names files: letters and digits only, not {usage.run!r}")
        name, schema = f"{usage.run}-{name}", SCHEMA.with_metadata({USAGE_META: usage.to_json()})
    tmp, final = f"{path}/.tmp-{name}.parquet", f"{path}/{name}.parquet"
    table = pa.Table.from_pydict({"key": list(keys), "answer": [list(map(float, a)) for a in answers],
                                  "prompt_tokens": list(prompt_tokens),
                                  "created_at": [time.time()] * len(keys)}, schema=schema)
    try:  # a full disk fails the write or the close, whose errors name no file: name the store
        local = isinstance(fs, LocalFileSystem)  # written through the os: fsspec's file costs more
        if local:
            os.makedirs(path, exist_ok=True)
        else:
            fs.makedirs(path, exist_ok=True)
        with open(tmp, "wb") if local else fs.open(tmp, "wb") as fh:
            # no column statistics or dictionaries: nothing reads a segment by range, its keys
            # are unique (27% less time a segment, and fewer bytes)
            pq.write_table(table, fh, write_statistics=False, use_dictionary=False)
        fs.mv(tmp, final)
    except OSError as err:
        with contextlib.suppress(OSError):
            fs.rm(tmp)  # half a segment frees its space now, not at the next gc
        raise StoreError(f"the teacher store {folder} cannot be written ({type(err).__name__}: {err}): "
                         "what it holds is kept; make room or make it writable, then run again "
                         "(a rerun asks the teacher only for what it lacks)") from None
    return final


@functools.lru_cache(maxsize=64)
def _filesystem(folder: str) -> tuple[Any, str]:
    """(fsspec filesystem, path) of a store folder: parsed once per process, not per segment."""
    fs, _, (path,) = fsspec.get_fs_token_paths(folder)
    return fs, path


def _unreadable(path: str, err: BaseException) -> "StoreError":
    return StoreError(f"the teacher store segment {path} cannot be read ({type(err).__name__}: "
                      f"{err}): make it readable to this user (its answers are paid for)")


def _open(path: str):
    """A segment to read: a local one through the os (fsspec's file costs more), any other
    through fsspec."""
    return open(path, "rb") if "://" not in path else fsspec.open(path, "rb")


def read_answers(path: str) -> pa.Table:
    """The (key, answer) columns of one segment, as `ANSWER_COLUMNS`; one that cannot be read,
    or whose columns are not those, is a StoreError naming it (never taken as unanswered: the
    rerun would pay for its answers again)."""
    try:  # one thread: the segments are small, and read several at a time (`Answers`)
        with _open(path) as fh:
            table = pq.ParquetFile(fh).read(columns=["key", "answer"], use_threads=False)
    except (OSError, pa.ArrowException) as err:
        raise _unreadable(path, err) from None
    try:
        return table if table.schema.equals(ANSWER_COLUMNS) else table.cast(ANSWER_COLUMNS)
    except pa.ArrowException as err:
        raise StoreError(f"the teacher store segment {path} holds {table.schema.types} where a "
                         f"segment holds {ANSWER_COLUMNS.types} ({err}): it is not this store's; "
                         "move it out of the store folder") from None


def read_segment(path: str) -> Iterator[tuple[str, list[float]]]:
    """(key, answer) pairs of one segment (`read_answers`)."""
    table = read_answers(path)
    yield from zip(table["key"].to_pylist(), table["answer"].to_pylist())


_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)


def digests(keys: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(32-byte digests as a numpy `S32` array, the positions they come from) of the `keys`
    that are request keys (64 lowercase hex digits: `request_key`); other keys are left out."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    keys = keys.cast(pa.string())
    where = np.flatnonzero(pc.fill_null(pc.equal(pc.binary_length(keys), 64), False)
                           .to_numpy(zero_copy_only=False))
    if where.size < len(keys):
        keys = keys.take(pa.array(where))
    if not len(keys):
        return np.empty(0, dtype="S32"), where
    first = np.frombuffer(keys.buffers()[1], dtype=np.int32, count=1, offset=4 * keys.offset)[0]
    chars = np.frombuffer(keys.buffers()[2], dtype=np.uint8, count=64 * len(keys), offset=first)
    nibbles = _HEX[chars.reshape(-1, 64)]
    hexed = ~(nibbles == 255).any(axis=1)
    raw = np.ascontiguousarray((nibbles[hexed, 0::2] << 4) | nibbles[hexed, 1::2])
    return raw.view("S32").reshape(-1), where[hexed]


class Answers:
    """Every answer the segments `paths` hold, kept compactly to be looked up from memory: the
    request keys (`digests`) as 32-byte digests in one sorted array, the answers as one flat
    float64 array with starts and lengths: about 190 bytes of RSS an answer, against ~0.5 KB as
    Python (key, list) pairs. Any other key (none a request makes) is kept in a dict. Segments
    are read `threads` at a time, a few hundred at once (`_read_many`)."""

    def __init__(self, paths: Sequence[str], threads: int = 8):
        self.other: dict[str, list[float]] = {}
        parts = [self._part(pa.concat_tables(tables))
                 for tables in _read_many(read_answers, paths, threads)]
        keys = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, dtype="S32")
        lengths = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, dtype=np.int32)
        self.values = np.concatenate([p[2] for p in parts]) if parts else np.empty(0)
        starts = np.cumsum(lengths, dtype=np.int64) - lengths
        order = np.argsort(keys, kind="stable")
        self.keys, self.starts, self.lengths = keys[order], starts[order], lengths[order]

    def _part(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys, rows = digests(table["key"])
        answers = table["answer"].combine_chunks()
        if len(rows) < table.num_rows:
            others = np.setdiff1d(np.arange(table.num_rows), rows)
            self.other.update(zip(table["key"].take(others).to_pylist(), answers.take(others).to_pylist()))
        answers = answers.take(pa.array(rows, type=pa.int64()))
        answers = pc.fill_null(answers, pa.scalar([], answers.type))
        lengths = pc.list_value_length(answers).to_numpy().astype(np.int32)
        return keys, lengths, pc.list_flatten(answers).to_numpy(zero_copy_only=False).astype(np.float64)

    def __len__(self) -> int:
        return len(self.keys) + len(self.other)

    def get_many(self, keys: Sequence[str]) -> list[list[float] | None]:
        """The stored answer of each of `keys` (None where there is none)."""
        found = [self.other.get(k) for k in keys] if self.other else [None] * len(keys)
        wanted, where = digests(pa.array(keys, type=pa.string()))
        if not len(self.keys) or not len(wanted):
            return found
        at = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        hit = self.keys[at] == wanted
        for i, row in zip(where[hit].tolist(), at[hit].tolist()):
            start = int(self.starts[row])
            found[i] = self.values[start:start + int(self.lengths[row])].tolist()
        return found


def run_usage(folder: str, run: str) -> tuple[list[WriteUsage], pa.Array]:
    """The `WriteUsage` records of the segments written for `run`, and every key they hold
    (duplicates kept). Only those segments are opened (their names start with the run id)."""
    def read(path: str):
        with _open(path) as fh:
            table = pq.read_table(fh, columns=["key"])
        return WriteUsage.from_metadata(table.schema.metadata), table["key"]

    mine = [p for p in segments(folder) if p.rsplit("/", 1)[-1].startswith(f"{run}-")]
    found = [one for chunk in _read_many(read, mine) for one in chunk]
    records = [u for u, _ in found if u is not None and u.run == run]
    keys = [chunk for _, k in found for chunk in k.chunks]
    return records, (pa.concat_arrays(keys) if keys else pa.array([], pa.string()))


class Index:
    """The answers of `folder`'s segments for an in-process caller that looks up many times (the
    audit's setup search: one lookup per prompt variant): each segment is read once, into an
    `Answers` table of the segments that appeared since the last lookup."""

    def __init__(self, folder: str):
        self.folder, self.tables, self.seen = folder, [], set()

    def refresh(self) -> None:
        new = [path for path in segments(self.folder) if path not in self.seen]
        if new:
            self.seen.update(new)
            self.tables.append(Answers(new))

    def lookup(self, keys: set[str]) -> dict[str, list[float]]:
        """The stored answers for `keys`."""
        self.refresh()
        wanted, found = list(keys), {}
        for table in self.tables:
            for key, answer in zip(wanted, table.get_many(wanted)):
                if answer is not None:
                    found.setdefault(key, answer)
        return found


def lookup(folder: str, keys: set[str]) -> dict[str, list[float]]:
    """The stored answers for `keys`: one lookup (`Index` for many)."""
    return Index(folder).lookup(keys) if keys else {}


def remove_temporary(folder: str, older_than_s: float = 3600.0, *, dry_run: bool = False) -> list[str]:
    """The `.tmp-*` files a dead writer left under `folder` (older than `older_than_s`: a live
    one renames in milliseconds), removed unless `dry_run`; returns their paths."""
    fs, _, (path,) = fsspec.get_fs_token_paths(folder)
    if not fs.exists(path):
        return []
    now, found = time.time(), []
    for p in fs.find(path):
        if "/.tmp-" in p:
            modified = fs.modified(p).timestamp() if hasattr(fs, "modified") else 0.0
            if now - modified > older_than_s:
                found.append(p)
                if not dry_run:
                    fs.rm(p)
    return found


# -- leases: gc never removes what a live run may still read ---------------------------------
#
# A run holds a lease for as long as it may read the store (from its first lookup until its
# version, with its teacher_keys.parquet, is published): a small JSON file under
# OUTPUT_ROOT/.potstill-store/leases/ that names its host and pid and whose heartbeat it
# rewrites every HEARTBEAT_S. gc holds a lease of its own while it collects. Both sides write
# their lease FIRST and look for the other's AFTER, so of a run and a gc that start together at
# least one sees the other: gc then skips collecting, or the run waits for gc to finish. Any
# filesystem fsspec reaches works (no POSIX locks needed). A lease is stale, and gc removes it,
# when its process is gone (same host, pid not running) or its heartbeat is older than
# STALE_AFTER_S (a run on another host that died); a lease file that cannot be read counts as
# live until its modification time is that old.

LEASES = "leases"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0   # 20 missed heartbeats


def leases_dir(output_root: str) -> str:
    return f"{root(output_root)}/{LEASES}"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: running
    return True


@dataclass(frozen=True)
class Lease:
    """One lease file: who holds it, and when it last said it was alive."""
    path: str
    kind: str                 # "run" or "gc"
    dataset: str | None
    host: str | None
    pid: int | None
    started_at: float | None
    heartbeat_at: float       # the holder's last heartbeat (the file's mtime when unreadable)
    problem: str | None = None  # why the file could not be read

    def stale_because(self, now: float | None = None,
                      stale_after_s: float = STALE_AFTER_S) -> str | None:
        """None while the lease is live; otherwise why it is stale."""
        age = (time.time() if now is None else now) - self.heartbeat_at
        if self.host == socket.gethostname() and self.pid is not None and not _pid_running(self.pid):
            return f"process {self.pid} on {self.host} is not running"
        if age > stale_after_s:
            return f"no heartbeat for {age:.0f} s (stale after {stale_after_s:.0f} s)"
        return None

    def describe(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        out = {"path": self.path, "kind": self.kind, "dataset": self.dataset, "host": self.host,
               "pid": self.pid, "heartbeat_age_s": round(now - self.heartbeat_at, 1)}
        if self.problem:
            out["problem"] = self.problem
        return out


def _fs_path(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, _, (path,) = fsspec.get_fs_token_paths(url)
    return fs, path


def read_leases(output_root: str) -> list[Lease]:
    """Every lease under the store, live or stale (temporary `.tmp-*` files are not leases)."""
    fs, base = _fs_path(leases_dir(output_root))
    if not fs.isdir(base):
        return []
    found = []
    for path in sorted(fs.ls(base, detail=False)):
        name = path.rsplit("/", 1)[-1]
        if name.startswith(".tmp-") or not name.endswith(".json"):
            continue
        try:
            with fs.open(path, "rb") as fh:
                info = json.loads(fh.read().decode("utf-8"))
            found.append(Lease(path, str(info["kind"]), info.get("dataset"), info.get("host"),
                               int(info["pid"]), float(info.get("started_at") or 0.0),
                               float(info["heartbeat_at"])))
        except FileNotFoundError:
            continue  # released while we listed
        except (OSError, ValueError, KeyError, TypeError) as err:
            try:
                modified = fs.modified(path).timestamp()
            except (OSError, NotImplementedError):
                modified = time.time()
            found.append(Lease(path, "unknown", None, None, None, None, modified,
                               problem=f"unreadable lease file ({type(err).__name__}: {err})"))
    return found


def live_leases(output_root: str, *, kinds: tuple[str, ...] = ("run", "gc", "unknown"),
                exclude: str | None = None, stale_after_s: float = STALE_AFTER_S) -> list[Lease]:
    return [l for l in read_leases(output_root)
            if l.kind in kinds and l.path != exclude and l.stale_because(stale_after_s=stale_after_s) is None]


def _write_lease(fs, path: str, info: dict) -> None:
    folder = path.rsplit("/", 1)[0]
    tmp = f"{folder}/.tmp-{uuid.uuid4().hex}.json"
    with fs.open(tmp, "wb") as fh:
        fh.write(json.dumps(info, sort_keys=True).encode("utf-8"))
    fs.mv(tmp, path)  # a reader sees the old heartbeat or the new one, never half a file


@contextlib.contextmanager
def hold_lease(output_root: str, kind: str, dataset: str | None = None, *,
               heartbeat_s: float = HEARTBEAT_S) -> Iterator[str]:
    """Hold a lease of `kind` ("run" or "gc") for the body: written before it, its heartbeat
    rewritten every `heartbeat_s` by a daemon thread, removed after. Yields its path."""
    fs, base = _fs_path(leases_dir(output_root))
    path = f"{base}/{uuid.uuid4().hex}.json"
    info = {"kind": kind, "dataset": dataset, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": time.time(), "heartbeat_at": time.time()}
    try:
        fs.makedirs(base, exist_ok=True)
        _write_lease(fs, path, info)
    except OSError as err:
        raise StoreError.unwritable(root(output_root), err) from None
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            try:
                _write_lease(fs, path, {**info, "heartbeat_at": time.time()})
            except Exception as err:  # noqa: BLE001 - the next beat tries again
                log.warning("could not refresh the store lease %s: %s", path, err)

    thread = threading.Thread(target=beat, name=f"potstill-lease-{kind}", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        try:
            fs.rm(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            log.warning("could not remove the store lease %s (%s): it goes stale once this "
                        "process has ended", path, err)


@contextlib.contextmanager
def run_lease(output_root: str, dataset: str | None = None, *, heartbeat_s: float = HEARTBEAT_S,
              poll_s: float = 2.0) -> Iterator[str]:
    """What a run holds while it may read the teacher store, until its version is published:
    `potstill gc` (`collect`) removes nothing while it is live. A gc already collecting is
    waited for (it holds a lease of its own), so no segment goes while the run reads it."""
    with hold_lease(output_root, "run", dataset, heartbeat_s=heartbeat_s) as path:
        said = False
        while gcs := live_leases(output_root, kinds=("gc",), exclude=path):
            if not said:
                log.info("potstill gc is collecting the teacher store (%s): waiting for it to "
                         "finish", ", ".join(f"{g.path} on {g.host}, pid {g.pid}" for g in gcs))
                said = True
            time.sleep(poll_s)
        yield path


def _empty_report(dry_run: bool) -> dict:
    return {"segments": 0, "kept": 0, "removed": 0, "rewritten": 0, "entries_removed": 0,
            "bytes_freed": 0, "too_recent": 0, "temporary_removed": 0, "stale_leases": [],
            "live_leases": [], "skipped": None, "dry_run": dry_run}


def collect(output_root: str, *, dry_run: bool = False, grace_s: float = 3600.0,
            stale_after_s: float = STALE_AFTER_S) -> dict:
    """Remove the store entries no published version needs (`needed_keys`): a segment with no
    needed key is deleted, one with some is rewritten with those only (the new segment first,
    then the old one goes); temporary files of dead writers go too.

    Nothing is removed while another run or gc holds a live lease (the report's `skipped` says
    why and `live_leases` names them); stale leases are removed and listed. The needed keys are
    read after the leases are checked, so a version published just before counts. Segments
    younger than `grace_s` are kept as well (a run of a potstill that takes no lease). A dry
    run reports exactly this and removes nothing."""
    report = _empty_report(dry_run)
    if dry_run:
        return _collect(output_root, report, None, grace_s, stale_after_s)
    with hold_lease(output_root, "gc") as own:
        return _collect(output_root, report, own, grace_s, stale_after_s)


def _collect(output_root: str, report: dict, own: str | None, grace_s: float,
             stale_after_s: float) -> dict:
    dry_run = report["dry_run"]
    now = time.time()
    live, (lease_fs, _) = [], _fs_path(leases_dir(output_root))
    for lease in read_leases(output_root):
        if lease.path == own:
            continue
        why = lease.stale_because(now, stale_after_s)
        if why is None:
            live.append(lease)
            continue
        report["stale_leases"].append({**lease.describe(now), "stale": why})
        if not dry_run:
            try:
                lease_fs.rm(lease.path)
            except FileNotFoundError:
                pass
    if live:
        report["live_leases"] = [l.describe(now) for l in live]
        report["skipped"] = (f"{len(live)} live lease{'s' if len(live) > 1 else ''} "
                             f"(a run or gc in progress): nothing collected; run gc again later")
        log.warning("teacher store not collected: %s", "; ".join(
            f"{l.kind} lease {l.path} (dataset {l.dataset}, host {l.host}, pid {l.pid})" for l in live))
        return report
    needed = needed_keys(output_root)
    report["temporary_removed"] = len(remove_temporary(f"{root(output_root)}/teacher", grace_s,
                                                       dry_run=dry_run))
    for path in segments(root(output_root)):
        report["segments"] += 1
        seg_fs, _, (local,) = fsspec.get_fs_token_paths(path)
        if now - seg_fs.modified(local).timestamp() < grace_s:
            report["too_recent"] += 1
            continue
        with fsspec.open(path, "rb") as fh:
            table = pq.read_table(fh)
        keep = [k in needed for k in table["key"].to_pylist()]
        if keep and all(keep):  # an empty segment (a batch whose rows all failed) goes
            report["kept"] += 1
            continue
        report["entries_removed"] += keep.count(False)
        report["bytes_freed"] += seg_fs.size(local)
        report["rewritten" if any(keep) else "removed"] += 1
        if dry_run:
            continue
        if any(keep):
            rest = table.filter(pa.array(keep))
            folder = local.rsplit("/", 1)[0]
            write_segment(folder, rest["key"].to_pylist(), rest["answer"].to_pylist(),
                          rest["prompt_tokens"].to_pylist())
        seg_fs.rm(local)
    return report


def needed_keys(output_root: str) -> set[str]:
    """Every key some published version under `output_root` (any dataset) was made from."""
    fs, _, (base,) = fsspec.get_fs_token_paths(str(output_root))
    needed: set[str] = set()
    for path in fs.glob(f"{base}/*/v*/{KEYS_FILE}"):
        with fs.open(path, "rb") as fh:
            needed.update(pq.read_table(fh)["key"].to_pylist())
    return needed
