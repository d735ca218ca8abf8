"""Immutable dataset versions: OUTPUT_ROOT/DATASET/vN/, published all at once or not at all.

Layout of one version:
    vN/data/part-0.parquet   published rows   (contract.PUBLISHED_SCHEMA)
    vN/filtered.parquet      curated-out rows (contract.FILTERED_SCHEMA, with filter_reason)
    vN/rejected.parquet      bad input rows   (contract.REJECTED_SCHEMA, with reason)
    vN/teacher_keys.parquet  the teacher-store entries the version was made from (potstill gc)
    vN/manifest.json         lineage: version, parent_version, dataset, created_at + the caller's
    vN/README.md             the dataset card (potstill.publish.card): `datasets.load_dataset(vN)` works
    vN/report.html, vN/validation.{json,html}   written by the `render` hook (potstill.reports.report)

Everything is written into a hidden `.tmp-<uuid>` folder next to the versions and then renamed
to vN, so a reader sees either a complete version or none; a failure removes the temp folder.
Two publishers racing for the same N are settled by the rename: the loser (the target exists
and is not empty) recomputes N and its parent and tries again. Anything else named vN (a
file, a link, a folder without a manifest) blocks its number too: it is skipped, with a
warning naming it, and never mistaken for a version. Versions are then made
read-only (0o444 files, 0o555 folders): nothing ever rewrites a published version, and the
permissions make that visible (root ignores them, so it is a signal, not a lock).

Manifest keys this module reads back: `fingerprint` (find_by_fingerprint), `config_digest`,
`validation.success` and `created_at` (list_versions).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from potstill.publish import card, contract
from potstill.config.core import NAME_RE

log = logging.getLogger(__name__)
_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")
_MAX_TRIES = 5
MANIFEST = "manifest.json"
DATA_FILE = Path("data") / "part-0.parquet"


class VersionError(ValueError):
    """A bad dataset/version name, or one that does not exist; phrased for the user."""


def _dataset_dir(output_root: str | os.PathLike, dataset: str) -> Path:
    if not isinstance(dataset, str) or not NAME_RE.match(dataset):
        raise VersionError(f"invalid dataset name {dataset!r}: "
                           "must match [A-Za-z0-9][A-Za-z0-9._-]* (no slashes or spaces)")
    return Path(output_root) / dataset


def _numbers(ds_dir: Path, complete_only: bool = False) -> list[int]:
    """Version numbers present, ascending; `.tmp-*` and other names are ignored.

    Any entry named vN blocks its number (a folder, a file, a link: a version can never be
    renamed onto it); only folders with a manifest count as published.
    """
    if not ds_dir.is_dir():
        return []
    found = []
    for p in ds_dir.iterdir():
        m = _VERSION_RE.match(p.name)
        if m and (not complete_only or (p.is_dir() and (p / MANIFEST).is_file())):
            found.append(int(m.group(1)))
    return sorted(found)


def not_versions(ds_dir: Path) -> list[tuple[Path, str]]:
    """Entries named like a version that are not one, and what they are: each blocks its number,
    and the next version takes the one after."""
    found = []
    for p in sorted(ds_dir.iterdir()) if ds_dir.is_dir() else []:
        if not _VERSION_RE.match(p.name):
            continue
        if not p.is_dir():
            found.append((p, "a file" if p.exists() else "a broken link"))
        elif not (p / MANIFEST).is_file():
            found.append((p, f"a folder without {MANIFEST}"))
    return found


def read_manifest(version_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(version_dir) / MANIFEST).read_text(encoding="utf-8"))


def latest_version(output_root: str | os.PathLike, dataset: str) -> Path | None:
    """The newest published version's folder, or None when the dataset has none."""
    ds_dir = _dataset_dir(output_root, dataset)
    nums = _numbers(ds_dir, complete_only=True)
    return ds_dir / f"v{nums[-1]}" if nums else None


def _write(tmp: Path, published: pa.Table, filtered: pa.Table, rejected: pa.Table,
           teacher_keys: pa.Table | None = None, labels: list[str] | None = None) -> None:
    # Conform first: a table that does not fit its schema fails before any file is written.
    optional = contract.optional_present(published)
    scored, filtered_s = (contract.with_labels(s, labels) for s in (
        contract.scored_schema(optional), contract.filtered_schema(optional)))
    tables = {DATA_FILE: contract.conform(published, scored),
              Path("filtered.parquet"): contract.conform(filtered, filtered_s),
              Path("rejected.parquet"): contract.conform(rejected, contract.REJECTED_SCHEMA)}
    if teacher_keys is not None:  # the teacher-store entries the version needs (potstill gc)
        tables[Path("teacher_keys.parquet")] = teacher_keys
    (tmp / "data").mkdir()
    for rel, table in tables.items():
        pq.write_table(table, tmp / rel)


DATA_FILES = (DATA_FILE, Path("filtered.parquet"), Path("rejected.parquet"), Path("teacher_keys.parquet"))


def _move_prepared(tmp: Path, prepared: Path) -> None:
    """Files written (streamed) elsewhere on the same filesystem move in: no copy, no table in
    memory. The data, filtered and rejected files must be there; teacher keys may be."""
    (tmp / "data").mkdir()
    for rel in DATA_FILES:
        if (prepared / rel).is_file() or rel.name != "teacher_keys.parquet":
            os.replace(prepared / rel, tmp / rel)


def _make_read_only(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
    for dirpath, dirnames, _ in os.walk(root, topdown=False):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o555)
    os.chmod(root, 0o555)


def publish(output_root: str | os.PathLike, dataset: str, *, manifest: dict[str, Any],
            published: pa.Table | None = None, filtered: pa.Table | None = None,
            rejected: pa.Table | None = None, render: Callable[[Path], Any] | None = None,
            teacher_keys: pa.Table | None = None, prepared: Path | None = None) -> Path:
    """Write a new version atomically and return its folder: from tables, or from the files of
    a `prepared` folder laid out as a version (`DATA_FILES`; potstill.job streams them there).

    The keys `version`, `parent_version`, `dataset` and `created_at` are set here and override
    the same keys in `manifest`, so lineage always describes where the files really are.
    The dataset card (README.md, potstill.publish.card) and then `render(folder)`, when given, are
    written into the hidden folder once its data files and final manifest are, just before
    the rename, so the files they add (report.html) are part of the version from the moment it
    exists; if either raises, nothing is published.
    """
    ds_dir = _dataset_dir(output_root, dataset)
    ds_dir.mkdir(parents=True, exist_ok=True)
    tmp = ds_dir / f".tmp-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        if prepared is not None:
            _move_prepared(tmp, Path(prepared))
        else:
            _write(tmp, published, filtered, rejected, teacher_keys, manifest.get("labels"))
        created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        tried, warned = [], set()
        for _ in range(_MAX_TRIES):
            for path, what in not_versions(ds_dir):
                if path not in warned:
                    warned.add(path)
                    log.warning("%s is not a version (%s): its number is skipped; move it out of "
                                "the dataset folder", path, what)
            nums = _numbers(ds_dir)
            complete = _numbers(ds_dir, complete_only=True)
            n = (nums[-1] if nums else 0) + 1
            full = {**manifest, "version": f"v{n}", "dataset": dataset, "created_at": created_at,
                    "parent_version": f"v{complete[-1]}" if complete else None}
            (tmp / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
            target = ds_dir / f"v{n}"
            tried.append(target.name)
            # os.rename replaces an EMPTY folder on POSIX, so check first; a non-empty one
            # (another publisher's finished version) makes the rename itself fail.
            if os.path.lexists(target):
                continue
            card.write_card(tmp)
            if render is not None:
                render(tmp)
            try:
                os.rename(tmp, target)
            except OSError as err:
                # taken meanwhile: by a version (EEXIST, ENOTEMPTY) or by a file (ENOTDIR)
                if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR) or \
                        isinstance(err, FileExistsError):
                    continue
                raise
            _make_read_only(target)
            return target
        raise RuntimeError(f"could not claim a version number for {dataset} in {ds_dir} after "
                           f"{_MAX_TRIES} tries ({', '.join(tried)} were taken as they were tried): "
                           "other publishers keep winning")
    except OSError as err:  # a full disk's errors name no file: name the dataset folder
        raise OSError(f"cannot publish {dataset} in {ds_dir} ({type(err).__name__}: {err})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def list_versions(output_root: str | os.PathLike, dataset: str) -> list[dict[str, Any]]:
    """One summary row per published version, oldest first (for `potstill versions`)."""
    ds_dir = _dataset_dir(output_root, dataset)
    rows = []
    for n in _numbers(ds_dir, complete_only=True):
        vdir = ds_dir / f"v{n}"
        m = read_manifest(vdir)
        data = vdir / DATA_FILE
        validation = m.get("validation") if isinstance(m.get("validation"), dict) else {}
        rows.append({
            "version": f"v{n}", "path": str(vdir),
            "rows": pq.ParquetFile(data).metadata.num_rows if data.is_file() else None,
            "created_at": m.get("created_at"), "parent_version": m.get("parent_version"),
            "config_digest": m.get("config_digest"), "validation_success": validation.get("success"),
        })
    return rows


def find_by_fingerprint(output_root: str | os.PathLike, dataset: str,
                        fingerprint: str | None) -> Path | None:
    """The newest version whose manifest has this `fingerprint` (to skip republishing)."""
    if not fingerprint:
        return None
    ds_dir = _dataset_dir(output_root, dataset)
    for n in reversed(_numbers(ds_dir, complete_only=True)):
        if read_manifest(ds_dir / f"v{n}").get("fingerprint") == fingerprint:
            return ds_dir / f"v{n}"
    return None


def resolve_version(output_root: str | os.PathLike, ref: str) -> Path:
    """`DATASET` (its latest version) or `DATASET@vN` -> that version's folder."""
    dataset, sep, version = ref.partition("@")
    ds_dir = _dataset_dir(output_root, dataset)
    if sep and not _VERSION_RE.match(version):
        raise VersionError(f"invalid version {version!r} in {ref!r}: expected v1, v2, ...")
    nums = _numbers(ds_dir, complete_only=True)
    if not nums:
        root = Path(output_root)
        known = sorted(p.name for p in root.iterdir()
                       if p.is_dir() and _numbers(p, True)) if root.is_dir() else []
        raise VersionError(f"unknown dataset {dataset!r} under {root} "
                           f"(datasets there: {', '.join(known) or 'none'})")
    if not sep:
        return ds_dir / f"v{nums[-1]}"
    if int(version[1:]) not in nums:
        raise VersionError(f"dataset {dataset!r} has no version {version} "
                           f"(versions: {', '.join(f'v{n}' for n in nums)})")
    return ds_dir / version


_PROBE, _PROBE_OLD_S = ".probe-", 3600.0


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def _output_root_error(output_root, folder: Path, what: str) -> VersionError:
    return VersionError(f"output_root {output_root}: {what}. A run stages and publishes its "
                        f"dataset in {folder}: it would do all its work and then fail. Fix it or "
                        "choose another output_root")


def _ensure_folder(output_root, folder: Path) -> None:
    if os.path.lexists(folder) and not folder.is_dir():
        raise _output_root_error(output_root, folder, f"{folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocking = next((p for p in folder.parents if os.path.lexists(p) and not p.is_dir()), None)
        what = (f"{blocking} is a file, not a folder" if blocking is not None else
                f"cannot create {folder} ({type(err).__name__}: {err.strerror or err})")
        raise _output_root_error(output_root, folder, what) from None


def check_writable(output_root: str | os.PathLike, dataset: str) -> Path:
    """Before any work: OUTPUT_ROOT, OUTPUT_ROOT/DATASET and its `.staging` folder are folders
    this process can create files and folders in (a run stages in `.staging` and publishes by
    renaming a folder it made in the dataset folder). Creates them, then makes and removes a
    probe in each of the last two; returns the dataset folder. A VersionError (exit 2) names
    `output_root`, the path and what is wrong (a file where a folder should be, a read-only
    filesystem, no permission)."""
    ds_dir = _dataset_dir(output_root, dataset)
    for folder in (Path(output_root), ds_dir, ds_dir / ".staging"):
        _ensure_folder(output_root, folder)
    for folder in (ds_dir, ds_dir / ".staging"):
        probe = folder / f"{_PROBE}{uuid.uuid4().hex}"  # a leftover only once it is old
        try:
            probe.mkdir()
            (probe / "probe").write_bytes(b"potstill")
        except OSError as err:
            raise _output_root_error(output_root, folder, f"cannot write in {folder} "
                                     f"({type(err).__name__}: {err.strerror or err})") from None
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    return ds_dir


@contextlib.contextmanager
def dataset_lock(output_root: str | os.PathLike, dataset: str) -> Iterator[Path]:
    """One run per dataset at a time: an exclusive lock on OUTPUT_ROOT/DATASET/.lock for the
    whole run. A second run waits (and says so) until the first ends; the operating system
    releases the lock of a killed run. Local and network filesystems with POSIX locks. The
    dataset folder is checked first (`check_writable`): one a run could not publish in stops
    it here, before any model loads."""
    import fcntl

    ds_dir = check_writable(output_root, dataset)
    try:
        fh = open(ds_dir / ".lock", "a+")
    except OSError as err:
        raise _output_root_error(output_root, ds_dir, f"cannot open the lock file {ds_dir / '.lock'} "
                                 f"({type(err).__name__}: {err.strerror or err})") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(
                "another run of dataset %s is in progress (%s): waiting for it to finish",
                dataset, ds_dir / ".lock")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield ds_dir
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_leftovers(output_root: str | os.PathLike, dataset: str, *,
                     dry_run: bool = False) -> list[str]:
    """Staging folders and half-published `.tmp-*` versions of dead runs (call it holding
    `dataset_lock`: no live run owns them then); returns what was removed, or with `dry_run`
    what would be (the same list), removing nothing. What cannot be removed is left out of the
    list and logged as a warning naming it."""
    ds_dir = _dataset_dir(output_root, dataset)
    staging = ds_dir / ".staging"
    found = [*ds_dir.glob(".tmp-*"), *ds_dir.glob(f"{_PROBE}*"),
             *(staging.iterdir() if staging.is_dir() else [])]
    # a probe is made outside the lock (check_writable) and lives for milliseconds
    found = sorted(p for p in found if not p.name.startswith(_PROBE) or _age_s(p) > _PROBE_OLD_S)
    removed = []
    for p in found:
        if not dry_run:
            try:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            except OSError as err:
                log.warning("could not remove %s, left by a run that did not finish (%s: %s)",
                            p, type(err).__name__, err)
                continue
        removed.append(str(p))
    return sorted(removed)


def existing_dataset(output_root: str | os.PathLike, dataset: str) -> Path:
    """The dataset's folder; a VersionError naming the datasets under `output_root` when it has
    none (so a mistyped name is refused, not created)."""
    ds_dir = _dataset_dir(output_root, dataset)
    if not ds_dir.is_dir():
        root = Path(output_root)
        known = sorted(p.name for p in root.iterdir()
                       if p.is_dir() and NAME_RE.match(p.name)) if root.is_dir() else []
        raise VersionError(f"no dataset {dataset!r} under {root} (no folder {ds_dir}; datasets "
                           f"there: {', '.join(known) or 'none'})")
    return ds_dir
