"""The embedding cache (models/embed_cache.py): each distinct text is embedded once per encoder
and max_length, across calls and runs; bad cache files cost a recompute, never a wrong vector."""
import json
import logging

import numpy as np
import pytest

from potstill.models import embed_cache
from potstill.config.core import parse_config


class Counting:
    """A fake encoder: a text's vector is derived from its characters; counts what it embeds."""

    def __init__(self, width=4):
        self.width, self.seen = width, []

    def __call__(self, texts):
        self.seen.extend(texts)
        return np.array([[len(t), sum(map(ord, t)) % 97, t.count("a"), i % 3][:self.width]
                         for i, t in enumerate(texts)], dtype=np.float32)


def test_each_distinct_text_is_embedded_once_across_calls(tmp_path):
    enc = Counting()
    first, rec1 = embed_cache.cached(["a", "bb", "a", "ccc"], "k", 4, enc, root=tmp_path)
    assert enc.seen == ["a", "bb", "ccc"]                       # the repeat is embedded once
    assert rec1 == {"rows": 4, "from_cache": 0, "embedded": 3, "folder": str(tmp_path / "k")}
    np.testing.assert_array_equal(first[0], first[2])
    second, rec2 = embed_cache.cached(["ccc", "dddd", "a"], "k", 4, enc, root=tmp_path)
    assert enc.seen[3:] == ["dddd"] and rec2["from_cache"] == 2 and rec2["embedded"] == 1
    np.testing.assert_array_equal(second[0], first[3])
    np.testing.assert_array_equal(second[2], first[0])
    assert len(list((tmp_path / "k").glob("part-*.parquet"))) == 2
    assert not list((tmp_path / "k").glob(".*tmp"))             # nothing half-written left
    other, rec3 = embed_cache.cached(["a"], "another-key", 4, enc, root=tmp_path)
    assert rec3["embedded"] == 1                                # keys never share vectors


def test_unreadable_or_wrong_width_files_are_skipped_and_recomputed(tmp_path, caplog):
    enc = Counting()
    good, _ = embed_cache.cached(["a", "bb"], "k", 4, enc, root=tmp_path)
    (tmp_path / "k" / "part-broken.parquet").write_bytes(b"not parquet")
    narrow = Counting(width=3)
    embed_cache.cached(["zz"], "k3", 3, narrow, root=tmp_path)
    for f in (tmp_path / "k3").glob("part-*.parquet"):         # a 3-wide file among 4-wide ones
        f.rename(tmp_path / "k" / "part-narrow.parquet")
    with caplog.at_level(logging.WARNING, logger="potstill.models.embed_cache"):
        again, rec = embed_cache.cached(["a", "bb", "zz"], "k", 4, enc, root=tmp_path)
    assert rec["from_cache"] == 2 and rec["embedded"] == 1 and enc.seen[-1] == "zz"
    np.testing.assert_array_equal(again[:2], good)
    assert again.shape == (3, 4)
    assert "part-broken.parquet" in caplog.text and "part-narrow.parquet" in caplog.text


def test_the_key_changes_with_whatever_changes_the_vectors(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 4}')
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    key = embed_cache.encoder_key("w" * 64, tmp_path, 128)
    assert key == embed_cache.encoder_key("w" * 64, tmp_path, 128)
    assert key != embed_cache.encoder_key("v" * 64, tmp_path, 128)      # other weights
    assert key != embed_cache.encoder_key("w" * 64, tmp_path, 64)       # other truncation
    (tmp_path / "vocab.txt").write_text("a\nc\n")
    assert key != embed_cache.encoder_key("w" * 64, tmp_path, 128)      # other tokenizer


def test_a_frozen_student_trained_again_reads_every_vector_and_fits_the_same_head(tmp_path, tiny_bert):
    from potstill.models.student.student import load_student
    from potstill.models.student.trainer import train
    from test_trainer import raw_config, write_version

    dataset = write_version(tmp_path / "v1")
    cfg = parse_config(raw_config(tmp_path, tiny_bert, encoder="frozen", head_c=[0.1, 10.0]))
    first = train(dataset, cfg, tmp_path / "a")
    used = first["embedding_cache"]                   # the toy texts repeat: each is embedded once
    assert used["train"]["from_cache"] == 0 and 0 < used["train"]["embedded"] <= first["train_rows"]
    assert used["train"]["rows"] == first["train_rows"] and used["test"]["rows"] == first["n"]
    second = train(dataset, cfg, tmp_path / "b")
    reused = second["embedding_cache"]
    assert reused["train"]["embedded"] == 0 and reused["train"]["from_cache"] == first["train_rows"]
    assert reused["test"]["embedded"] == 0 and reused["test"]["from_cache"] == first["n"]
    assert second["head"]["c"] == first["head"]["c"] and second["recipe"] == first["recipe"]
    a, _ = load_student(tmp_path / "a")
    b, _ = load_student(tmp_path / "b")
    assert np.array_equal(a.head.weight.detach().numpy(), b.head.weight.detach().numpy())
    off = train(dataset, cfg.model_copy(update={"student": cfg.student.model_copy(
        update={"embedding_cache": False})}), tmp_path / "c")
    assert "embedding_cache" not in off and off["accuracy"] == first["accuracy"]
    c, _ = load_student(tmp_path / "c")
    np.testing.assert_allclose(c.head.weight.detach().numpy(), a.head.weight.detach().numpy(),
                               rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["embedding_cache"] == reused


def test_a_file_with_ragged_vectors_is_skipped_not_fatal(tmp_path, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "k").mkdir()
    pq.write_table(pa.table({"text_sha256": pa.array([embed_cache.text_key("a"), embed_cache.text_key("bb")],
                                                     pa.binary(32)),
                             "vector": pa.array([[1.0, 2.0, 3.0, 4.0], [1.0]], pa.list_(pa.float32()))}),
                   tmp_path / "k" / "part-ragged.parquet")
    enc = Counting()
    with caplog.at_level(logging.WARNING, logger="potstill.models.embed_cache"):
        out, rec = embed_cache.cached(["a", "bb"], "k", 4, enc, root=tmp_path)
    assert rec["embedded"] == 2 and enc.seen == ["a", "bb"] and "part-ragged.parquet" in caplog.text
    np.testing.assert_array_equal(out, enc(["a", "bb"]))
