"""The teacher store: every answer the teacher gave, kept so that no request is ever paid twice.

Layout, under `OUTPUT_ROOT/.potstill-store/` (any fsspec path the workers can reach):

    teacher/<model sha256[:16]>/<uuid>.parquet     one segment per scored batch

A segment holds (`key`, `answer`, `prompt_tokens`, `created_at`): `key` is the SHA-256 of what
determines the answer (the weights' SHA-256, the prompt's token ids, the candidate answers'
token ids; `request_key`), `answer` the raw candidate log-probabilities the model returned,
BEFORE verbalizer sums, option masks and calibration, so changing any of those (or the audit,
or curation) re-queries nothing.

Why segments and not a database: several Beam workers on several machines write at once, and a
shared SQLite or DuckDB file on a network or object filesystem is neither safe nor reachable.
A segment is written under a temporary name and renamed (an atomic PUT on object stores), never
modified afterwards: the store is append-only, a crash loses at most the batch in flight, and
readers never see half a segment. The graph joins the segments to the rows by `key` (a
CoGroupByKey), so no worker needs the whole index in memory. Duplicate keys (two workers
answering the same request in a race) are harmless: the answers are the same request's.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Iterator, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

STORE_DIR = ".potstill-store"
KEYS_SCHEMA = pa.schema([("key", pa.string())])  # a version's teacher_keys.parquet
KEYS_FILE = "teacher_keys.parquet"
SCHEMA = pa.schema([("key", pa.string()), ("answer", pa.list_(pa.float64())),
                    ("prompt_tokens", pa.int32()), ("created_at", pa.float64())])


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

    def index(self) -> "Index":
        return Index(self.folder)

    def write(self, keys: Sequence[str], answers: Sequence[Sequence[float]],
              prompt_tokens: Sequence[int]) -> str:
        return write_segment(self.folder, keys, answers, prompt_tokens)

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
            raise StoreError(f"the teacher store {self.folder} cannot be written ({type(err).__name__}: "
                             f"{err}): every answer would be lost. Make it writable or choose another "
                             "output_root.") from None


class StoreError(OSError):
    """The teacher store cannot keep answers: a problem the user fixes (exit 2)."""


def request_key(model_sha256: str, prompt_ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> str:
    """What determines a label-scoring answer, hashed: never the row's position or batch."""
    payload = json.dumps([model_sha256, list(prompt_ids), [list(c) for c in candidates]],
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


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


def write_segment(folder: str, keys: Sequence[str], answers: Sequence[Sequence[float]],
                  prompt_tokens: Sequence[int]) -> str:
    """Append one segment (write under a temporary name, then rename); returns its path."""
    fs, _, (path,) = fsspec.get_fs_token_paths(folder)
    fs.makedirs(path, exist_ok=True)
    name = uuid.uuid4().hex
    tmp, final = f"{path}/.tmp-{name}.parquet", f"{path}/{name}.parquet"
    table = pa.Table.from_pydict({"key": list(keys), "answer": [list(map(float, a)) for a in answers],
                                  "prompt_tokens": list(prompt_tokens),
                                  "created_at": [time.time()] * len(keys)}, schema=SCHEMA)
    with fs.open(tmp, "wb") as fh:
        pq.write_table(table, fh)
    fs.mv(tmp, final)
    return final


def read_segment(path: str) -> Iterator[tuple[str, list[float]]]:
    """(key, answer) pairs of one segment."""
    with fsspec.open(path, "rb") as fh:
        table = pq.read_table(fh, columns=["key", "answer"])
    yield from zip(table["key"].to_pylist(), table["answer"].to_pylist())


class Index:
    """Which segment holds each key, read from the key column only, and topped up with the
    segments that appeared since: an in-process caller that looks up many times (the audit's
    setup search: one lookup per prompt variant) opens only the segments holding its keys."""

    def __init__(self, folder: str):
        self.folder, self.where, self.seen = folder, {}, set()

    def refresh(self) -> None:
        for path in segments(self.folder):
            if path not in self.seen:
                self.seen.add(path)
                with fsspec.open(path, "rb") as fh:
                    for key in pq.read_table(fh, columns=["key"])["key"].to_pylist():
                        self.where.setdefault(key, path)

    def lookup(self, keys: set[str]) -> dict[str, list[float]]:
        """The stored answers for `keys`."""
        self.refresh()
        by_path: dict[str, set[str]] = {}
        for key in keys:
            if key in self.where:
                by_path.setdefault(self.where[key], set()).add(key)
        found: dict[str, list[float]] = {}
        for path, wanted in by_path.items():
            found.update((k, a) for k, a in read_segment(path) if k in wanted)
        return found


def lookup(folder: str, keys: set[str]) -> dict[str, list[float]]:
    """The stored answers for `keys`: one lookup (`Index` for many)."""
    return Index(folder).lookup(keys) if keys else {}


def remove_temporary(folder: str, older_than_s: float = 3600.0) -> int:
    """Remove `.tmp-*` segments a dead writer left (older than an hour: a live one renames in
    milliseconds); returns how many."""
    fs, _, (path,) = fsspec.get_fs_token_paths(folder)
    if not fs.exists(path):
        return 0
    now, removed = time.time(), 0
    for p in fs.find(path):
        if "/.tmp-" in p:
            modified = fs.modified(p).timestamp() if hasattr(fs, "modified") else 0.0
            if now - modified > older_than_s:
                fs.rm(p)
                removed += 1
    return removed


def collect(output_root: str, needed: set[str], *, dry_run: bool = False,
            grace_s: float = 3600.0) -> dict:
    """Remove the store entries no version needs: a segment with no needed key is deleted, one
    with some is rewritten with those only (the new segment first, then the old one goes).
    Segments younger than `grace_s` are kept: a run in progress may not have published yet."""
    report = {"segments": 0, "kept": 0, "removed": 0, "rewritten": 0, "entries_removed": 0,
              "bytes_freed": 0, "too_recent": 0, "dry_run": dry_run}
    now = time.time()
    fs, _, (base,) = fsspec.get_fs_token_paths(root(output_root))
    for path in segments(root(output_root)):
        report["segments"] += 1
        seg_fs, _, (local,) = fsspec.get_fs_token_paths(path)
        if now - seg_fs.modified(local).timestamp() < grace_s:
            report["too_recent"] += 1
            continue
        with fsspec.open(path, "rb") as fh:
            table = pq.read_table(fh)
        keep = [k in needed for k in table["key"].to_pylist()]
        if all(keep):
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
