"""What the trainer reads: a published version's rows as arrays, and the config's test split.
Errors name the file, column or row (`TrainerError`, a user error: exit 2)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from potstill.config.core import Config
from potstill.progress import log_line
from potstill.publish.contract import SOURCES
from potstill.rows.records import read_configured, with_choices

DATA_COLUMNS = ["text", "label", "label_probs", "source", "weight"]


class TrainerError(ValueError):
    """Bad input to the trainer, phrased for the user."""


def log(msg: str) -> None:
    print(log_line(msg, "potstill.trainer"), file=sys.stderr, flush=True)


def load_dataset(dataset_dir: str | Path, labels: list[str]) -> tuple[dict, dict]:
    """The version's rows as arrays (texts, label_idx, probs, is_seed, weight) and its manifest."""
    root = Path(dataset_dir)
    if not (root / "manifest.json").is_file():
        raise TrainerError(f"dataset version not found: {root}/manifest.json does not exist")
    manifest = json.loads((root / "manifest.json").read_text())
    if manifest.get("labels") != list(labels):
        raise TrainerError(f"label mismatch: dataset manifest.json has labels {manifest.get('labels')} "
                           f"but config task.labels is {list(labels)}")
    files = sorted((root / "data").rglob("*.parquet"))
    if not files:
        raise TrainerError(f"no Parquet files under {root / 'data'}")
    try:
        present = pq.read_schema(files[0]).names
        columns = DATA_COLUMNS + [c for c in ("choices", "rationale") if c in present]
        table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
    except (pa.ArrowInvalid, KeyError) as err:
        raise TrainerError(f"{root / 'data'}: cannot read the contract columns {DATA_COLUMNS}: {err}")

    index = {label: i for i, label in enumerate(labels)}
    rows = table.to_pydict()
    if any(not isinstance(t, str) or not t for t in rows["text"]):
        raise TrainerError("dataset column text has null or empty values")
    if "choices" in rows:  # multiple choice: the student reads the options too, as the teacher did
        rows["text"] = [with_choices(t, c) if c else t for t, c in zip(rows["text"], rows["choices"])]
    bad = sorted({l for l in rows["label"] if l not in index}, key=str)
    if bad:
        raise TrainerError(f"dataset rows have labels not in task.labels: {bad[:5]}")
    bad = sorted({s for s in rows["source"] if s not in SOURCES}, key=str)
    if bad:
        raise TrainerError(f"dataset rows have unknown source values {bad[:5]} (expected {SOURCES})")
    weight = np.asarray(rows["weight"], dtype=np.float64)
    if not np.all(np.isfinite(weight) & (weight >= 0)):
        raise TrainerError("dataset column weight must be finite and >= 0")
    label_idx = np.asarray([index[l] for l in rows["label"]], dtype=np.int64)
    is_seed = np.asarray([s == "seed" for s in rows["source"]])
    # Seed rows are trained on their gold label; their label_probs only measure the teacher
    # (student.recipe: trust), where they are valid.
    probs = np.eye(len(labels))[label_idx]
    teacher = np.full(probs.shape, np.nan)
    for i in np.flatnonzero(is_seed):
        p = rows["label_probs"][i]
        if p is not None and len(p) == len(labels) and all(math.isfinite(x) and x >= 0 for x in p) \
                and sum(p) > 0:
            teacher[i] = np.asarray(p) / sum(p)
    for i in np.flatnonzero(~is_seed):
        p = rows["label_probs"][i]
        if p is None or len(p) != len(labels) or not all(math.isfinite(x) and x >= 0 for x in p) \
                or sum(p) <= 0:
            raise TrainerError(f"row {i} ({rows['text'][i][:40]!r}): label_probs must be "
                               f"{len(labels)} non-negative numbers with a positive sum, got {p}")
        probs[i] = p
        teacher[i] = probs[i] / probs[i].sum()
    return {"texts": rows["text"], "label_idx": label_idx, "probs": probs, "is_seed": is_seed,
            "teacher_probs": teacher,
            "weight": weight, "rationales": rows.get("rationale")}, manifest


def seed_dataset(cfg: Config) -> tuple[dict, dict]:
    """The config's gold seed rows as the arrays `load_dataset` gives (every row a seed row on
    its gold label, weight 1): the gold-only student needs no published version."""
    if cfg.corpus.seed is None:
        raise TrainerError("train_on=seed without --dataset needs corpus.seed in the config")
    records, rejected = read_configured(cfg, "seed")
    if rejected:
        log(f"seed split: {len(rejected)} rows rejected")
    if not records:
        raise TrainerError(f"seed split {cfg.corpus.seed.path} has no valid rows ({len(rejected)} rejected)")
    labels = cfg.task.labels
    label_idx = np.asarray([labels.index(r.gold_label) for r in records], dtype=np.int64)
    n = len(records)
    return ({"texts": [r.model_input for r in records], "label_idx": label_idx,
             "probs": np.eye(len(labels))[label_idx], "is_seed": np.ones(n, dtype=bool),
             "teacher_probs": np.full((n, len(labels)), np.nan), "weight": np.ones(n),
             "rationales": None},
            {"labels": list(labels), "version": None, "source": str(cfg.corpus.seed.path)})


def read_test(cfg: Config) -> tuple[list[str], np.ndarray, int]:
    """Test texts, gold label indices and the number of rejected test rows."""
    test = cfg.corpus.test
    if test is None:
        raise TrainerError("config has no corpus.test: the student is evaluated on a held-out test split")
    records, rejected = read_configured(cfg, "test")
    if rejected:
        reasons: dict[str, int] = {}
        for r in rejected:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        log(f"test split: {len(rejected)} rows rejected {reasons}")
    if not records:
        raise TrainerError(f"test split {test.path} has no valid rows ({len(rejected)} rejected)")
    index = {label: i for i, label in enumerate(cfg.task.labels)}
    return ([r.model_input for r in records], np.asarray([index[r.gold_label] for r in records]),
            len(rejected))


