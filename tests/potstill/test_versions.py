"""Immutable dataset versions: numbering, lineage, atomicity, races and lookup."""
import json
import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potstill.publish import contract, versions
from potstill.publish.versions import (VersionError, find_by_fingerprint, latest_version, list_versions,
                               publish, resolve_version)


def make_row(id, label="pos", conf=0.9, source="corpus"):
    """A valid PUBLISHED_SCHEMA row (two labels)."""
    return {"id": id, "text": f"text {id}", "label": label, "label_probs": [1 - conf, conf],
            "teacher_label": label, "teacher_confidence": conf, "teacher_entropy": 0.3,
            "teacher_margin": 2 * conf - 1, "gold_label": None, "source": source, "weight": 1.0}


def tables(n=3):
    published = pa.Table.from_pylist([make_row(f"p{i}") for i in range(n)],
                                     schema=contract.PUBLISHED_SCHEMA)
    filtered = pa.Table.from_pylist([{**make_row("f0", conf=0.5), "filter_reason": "low_confidence"}],
                                    schema=contract.FILTERED_SCHEMA)
    rejected = pa.Table.from_pylist([{"source": "corpus", "input_ref": "in.csv:3", "reason": "empty",
                                      "detail": None, "raw": "{}"}], schema=contract.REJECTED_SCHEMA)
    return {"published": published, "filtered": filtered, "rejected": rejected}


def pub(root, fingerprint="fp1", n=3, **manifest):
    return publish(root, "demo", **tables(n), manifest={
        "fingerprint": fingerprint, "config_digest": "abc",
        "validation": {"success": True}, **manifest})


def test_v1_then_v2_with_parent_and_layout(tmp_path):
    v1 = pub(tmp_path)
    v2 = pub(tmp_path, fingerprint="fp2", n=5)
    assert (v1.name, v2.name) == ("v1", "v2")
    m1, m2 = versions.read_manifest(v1), versions.read_manifest(v2)
    assert m1["parent_version"] is None and m2["parent_version"] == "v1"
    assert m2["version"] == "v2" and m2["dataset"] == "demo" and m2["created_at"].endswith("+00:00")
    text = (v2 / "manifest.json").read_text()
    assert text == json.dumps(m2, indent=2, sort_keys=True) + "\n"
    assert pq.read_schema(v2 / "data" / "part-0.parquet") == contract.PUBLISHED_SCHEMA
    assert pq.read_table(v2 / "filtered.parquet").schema == contract.FILTERED_SCHEMA
    assert pq.read_table(v2 / "rejected.parquet").schema == contract.REJECTED_SCHEMA
    assert pq.read_table(v2 / "data" / "part-0.parquet").num_rows == 5


def test_published_version_is_read_only(tmp_path):
    v1 = pub(tmp_path)
    assert stat.S_IMODE(os.stat(v1 / "manifest.json").st_mode) == 0o444
    assert stat.S_IMODE(os.stat(v1 / "data").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(v1).st_mode) == 0o555


def test_failed_write_leaves_nothing(tmp_path):
    pub(tmp_path)
    bad = tables()
    bad["filtered"] = bad["filtered"].drop_columns(["filter_reason"])  # fails to conform
    with pytest.raises(ValueError, match="filter_reason"):
        publish(tmp_path, "demo", **bad, manifest={})
    with pytest.raises(TypeError):  # manifest not JSON-serialisable: fails after the parquet files
        publish(tmp_path, "demo", **tables(), manifest={"bad": object()})
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["v1"]


def test_leftover_tmp_dirs_are_ignored(tmp_path):
    (tmp_path / "demo" / ".tmp-crashed").mkdir(parents=True)
    assert latest_version(tmp_path, "demo") is None
    assert pub(tmp_path).name == "v1"
    assert [v["version"] for v in list_versions(tmp_path, "demo")] == ["v1"]


def test_lost_race_moves_to_next_number(tmp_path, monkeypatch):
    pub(tmp_path)
    real_numbers, calls = versions._numbers, []

    def numbers_then_rival(ds_dir, complete_only=False):
        found = real_numbers(ds_dir, complete_only)
        calls.append(complete_only)
        if len(calls) == 2:  # after our listing, before our rename: a rival publishes v2
            rival = ds_dir / "v2"
            rival.mkdir()
            (rival / "manifest.json").write_text(json.dumps({"version": "v2"}))
        return found

    monkeypatch.setattr(versions, "_numbers", numbers_then_rival)
    v = pub(tmp_path, fingerprint="mine")
    assert v.name == "v3"
    assert versions.read_manifest(v)["parent_version"] == "v2"
    assert versions.read_manifest(v)["version"] == "v3"


def test_rename_collision_is_retried(tmp_path, monkeypatch):
    real_rename = os.rename

    def rival_first(src, dst):
        if str(dst).endswith("v1") and not os.path.exists(dst):
            os.makedirs(os.path.join(dst, "data"))  # a rival's non-empty v1 lands first
            with open(os.path.join(dst, "manifest.json"), "w") as f:
                f.write("{}")
        return real_rename(src, dst)

    monkeypatch.setattr(versions.os, "rename", rival_first)
    assert pub(tmp_path).name == "v2"


def test_find_by_fingerprint(tmp_path):
    v1 = pub(tmp_path, fingerprint="aaa")
    v2 = pub(tmp_path, fingerprint="bbb")
    assert find_by_fingerprint(tmp_path, "demo", "aaa") == v1
    assert find_by_fingerprint(tmp_path, "demo", "bbb") == v2
    assert find_by_fingerprint(tmp_path, "demo", "ccc") is None
    assert find_by_fingerprint(tmp_path, "other", "aaa") is None
    assert find_by_fingerprint(tmp_path, "demo", None) is None


def test_list_versions(tmp_path):
    assert list_versions(tmp_path, "demo") == []
    pub(tmp_path, n=2)
    pub(tmp_path, n=4, validation={"success": False})
    rows = list_versions(tmp_path, "demo")
    assert [(r["version"], r["rows"], r["parent_version"], r["config_digest"],
             r["validation_success"]) for r in rows] == [
        ("v1", 2, None, "abc", True), ("v2", 4, "v1", "abc", False)]
    assert all(r["created_at"] for r in rows)


def test_resolve_version(tmp_path):
    v1, v2 = pub(tmp_path), pub(tmp_path)
    assert resolve_version(tmp_path, "demo") == v2 == latest_version(tmp_path, "demo")
    assert resolve_version(tmp_path, "demo@v1") == v1
    with pytest.raises(VersionError, match="no version v7.*v1, v2"):
        resolve_version(tmp_path, "demo@v7")
    with pytest.raises(VersionError, match="unknown dataset 'nope'.*demo"):
        resolve_version(tmp_path, "nope")
    for bad in ("../x", "demo/../demo", "", "a b", ".hidden"):
        with pytest.raises(VersionError, match="invalid dataset name"):
            resolve_version(tmp_path, bad)
    for bad in ("demo@1", "demo@v0", "demo@v1/../v2", "demo@"):
        with pytest.raises(VersionError, match="invalid version"):
            resolve_version(tmp_path, bad)


def test_publish_rejects_bad_dataset_name(tmp_path):
    with pytest.raises(VersionError, match="invalid dataset name"):
        publish(tmp_path, "../escape", **tables(), manifest={})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stray", ["file", "broken link", "empty folder", "folder without manifest"])
def test_a_stray_entry_named_like_the_next_version_is_skipped_and_named(tmp_path, caplog, stray):
    """`potstill query --out OUT/DS/v2` (or anything else) leaves a v2 that is no version: the
    next publish takes v3 and says why, instead of failing after all the run's work."""
    v1 = pub(tmp_path)
    path = tmp_path / "demo" / "v2"
    if stray == "file":
        path.write_text("x\n1\n")
    elif stray == "broken link":
        path.symlink_to(tmp_path / "nowhere")
    else:
        path.mkdir()
        if stray == "folder without manifest":
            (path / "result.csv").write_text("x\n")
    with caplog.at_level("WARNING", logger=versions.__name__):
        v = pub(tmp_path, fingerprint="fp2")
    assert v.name == "v3" and versions.read_manifest(v)["parent_version"] == "v1"
    assert str(path) in caplog.text and "is not a version" in caplog.text
    assert [r["version"] for r in list_versions(tmp_path, "demo")] == ["v1", "v3"]
    assert resolve_version(tmp_path, "demo") == v and latest_version(tmp_path, "demo") == v
    assert os.path.lexists(path)  # not ours to remove
    assert pub(tmp_path, fingerprint="fp3").name == "v4" and v1.name == "v1"


def test_a_file_taking_the_number_during_the_rename_moves_to_the_next(tmp_path, monkeypatch):
    real_rename = os.rename

    def file_first(src, dst):
        if str(dst).endswith("v1") and not os.path.lexists(dst):
            with open(dst, "w") as f:  # a stray file lands between the check and the rename
                f.write("x")
        return real_rename(src, dst)

    monkeypatch.setattr(versions.os, "rename", file_first)
    assert pub(tmp_path).name == "v2"


@pytest.mark.parametrize("blocked", ["out", "out/demo", "out/demo/.staging", "parent"])
def test_check_writable_names_output_root_and_the_path(tmp_path, blocked):
    """A file where a folder must be (the way to make a folder unwritable that stops root too):
    refused before any work, naming output_root and the path."""
    root = tmp_path / "parent" / "out" if blocked == "parent" else tmp_path / "out"
    path = tmp_path / blocked
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder")
    with pytest.raises(VersionError) as err:
        versions.check_writable(root, "demo")
    message = str(err.value)
    assert message.startswith(f"output_root {root}:") and f"{path} is a file, not a folder" in message
    assert path.is_file()


def test_check_writable_makes_the_folders_and_leaves_no_probe(tmp_path):
    ds = versions.check_writable(tmp_path / "new" / "out", "demo")
    assert ds == tmp_path / "new" / "out" / "demo"
    assert [p.name for p in ds.iterdir()] == [".staging"] and not list((ds / ".staging").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_writable_refuses_a_read_only_dataset_folder(tmp_path):
    ds = versions.check_writable(tmp_path, "demo")
    ds.chmod(0o555)
    try:
        with pytest.raises(VersionError, match=f"output_root {tmp_path}: cannot write in {ds} "):
            versions.check_writable(tmp_path, "demo")
    finally:
        ds.chmod(0o755)


def test_a_probe_of_a_run_waiting_for_the_lock_is_no_leftover(tmp_path):
    """check_writable runs before the lock: another run's remove_leftovers must not take the
    probe from under it; an old probe (its run died) is a leftover."""
    ds = versions.check_writable(tmp_path, "demo")
    young, old = ds / ".probe-young", ds / ".staging" / ".probe-old"
    young.mkdir()
    old.mkdir()
    os.utime(old, (0, 0))
    assert versions.remove_leftovers(tmp_path, "demo") == [str(old)]
    assert young.is_dir() and not old.exists()
