"""Pretrained-encoder outputs kept on disk: an encoder never embeds the same text twice.

A frozen student (`student.encoder: frozen`) and the trust recipe's gold-rows classifier read the
PRETRAINED encoder's mean-pooled outputs; another student seed, recipe or pooling over the same
rows needs exactly the same vectors. With `student.embedding_cache` on (the default) they are
kept under `$POTSTILL_CACHE/embeddings/` (`~/.cache/potstill` when unset) and read back:

  key      SHA-256 of (the encoder's weights SHA-256 as models/registry.py verified it, the
           bytes of its config and tokenizer files, `max_length`, this format's version):
           anything that changes the vectors changes the folder
  folder   <root>/<key>/part-<uuid>.parquet, columns text_sha256 (SHA-256 of the text as fed,
           32 bytes) and vector (float32 list, the unnormalised mean-pooled last hidden state,
           exactly `potstill.models.student.student.embeddings(..., normalise=False)`)
  writes   each run that embeds new texts writes them as ONE new file under a temporary name,
           then renames it: concurrent runs never clobber each other, a crash leaves no half
           file, and a text in two files is harmless (the vectors are the same)

A file that cannot be read, or whose vectors have the wrong width, is skipped with a warning
and its texts are embedded again. Size: 4 bytes x the encoder width per text (3 KB for a
768-wide encoder); delete the folder to reclaim it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)
FORMAT = "potstill-embeddings/1 mean-pooled last_hidden_state float32"
SHAPING_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json", "sentencepiece.bpe.model", "spiece.model", "merges.txt",
                 "vocab.json")


def default_root() -> Path:
    from potstill.models.registry import default_cache_dir

    return Path(os.environ.get("POTSTILL_EMBEDDING_CACHE") or Path(default_cache_dir()) / "embeddings")


def encoder_key(weights_sha256: str, folder: str | Path, max_length: int) -> str:
    """The cache folder's name for this encoder at this `max_length` (module docstring)."""
    h = hashlib.sha256(f"{FORMAT}\n{weights_sha256}\nmax_length={max_length}\n".encode())
    for name in SHAPING_FILES:
        path = Path(folder) / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _read(folder: Path, wanted: set[bytes], width: int) -> dict[bytes, np.ndarray]:
    found: dict[bytes, np.ndarray] = {}
    for path in sorted(folder.glob("part-*.parquet")):
        try:
            table = pq.read_table(path)
            keys = table.column("text_sha256").to_pylist()
            vectors = table.column("vector").combine_chunks()
        except (OSError, KeyError, pa.ArrowException) as err:
            log.warning("embedding cache: skipping unreadable %s (%s)", path, err)
            continue
        take = [i for i, k in enumerate(keys) if k in wanted and k not in found]
        if not take:
            continue
        chosen = vectors.take(take)
        lengths = pc.list_value_length(chosen).to_numpy(zero_copy_only=False)
        if chosen.null_count or (lengths != width).any():
            log.warning("embedding cache: skipping %s: vectors of width %s, the encoder's is %d",
                        path, sorted(set(lengths.tolist())) or "?", width)
            continue
        block = chosen.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
        found.update(zip((keys[i] for i in take), block))
    return found


def _write(folder: Path, keys: list[bytes], vectors: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({"text_sha256": pa.array(keys, pa.binary(32)),
                      "vector": pa.array(list(vectors.astype(np.float32)), pa.list_(pa.float32()))})
    name = f"part-{uuid.uuid4().hex}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / name)


def cached(texts: list[str], key: str, width: int, compute, root: str | Path | None = None
           ) -> tuple[np.ndarray, dict]:
    """Vectors [len(texts), width] for `texts`, reading what the cache under `key` holds and
    calling `compute(list_of_texts) -> array` for the rest (each distinct text once), which are
    then stored; and {"rows", "from_cache", "embedded", "folder"}."""
    folder = Path(root or default_root()) / key
    keys = [text_key(t) for t in texts]
    found = _read(folder, set(keys), width) if folder.is_dir() else {}
    missing: dict[bytes, str] = {}
    for k, t in zip(keys, texts):
        if k not in found and k not in missing:
            missing[k] = t
    if missing:
        fresh = np.asarray(compute(list(missing.values())), dtype=np.float32)
        found.update(zip(missing, fresh))
        try:
            _write(folder, list(missing), fresh)
        except OSError as err:  # a full or read-only disk costs the reuse, not the run
            log.warning("embedding cache: could not write to %s (%s)", folder, err)
    out = np.stack([found[k] for k in keys]) if keys else np.zeros((0, width), dtype=np.float32)
    hits = sum(k not in missing for k in keys)
    return out, {"rows": len(texts), "from_cache": hits, "embedded": len(missing),
                 "folder": str(folder)}
