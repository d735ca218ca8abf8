"""Class-balanced self-training of the fallback teacher (models/quality/fallback.py).

The gold rows' classifier (round 0) labels a sample of the pool; round r = 1..R refits it, with
round 0's C, on the seed rows plus, per class, the share r/(R+1) of the sampled pool rows
predicted that class with the highest probability of it, each with that label, and relabels the
sample. Every class keeps its predicted share of the pseudo-labels however confident the
classifier is on it, so a class it is unsure of is not crowded out by a confident one (a fixed
probability threshold is: docs/measurements/fallback.md). The final round's classifier labels
the pool; the seed rows keep round 0's out-of-fold probabilities (the honest figures the trust
recipe measures the teacher by).

The sample: at most `audit.self_training_max_rows` valid pool rows, one per text (content id),
none that is a seed row or a test row (the test-leak guard's ids), chosen by the smallest
SHA-256 of (`audit.search.seed`, id): the same rows whatever the order or the split of the input
files. It is embedded once in the driver; the graph reads those rows' final probabilities back
instead of embedding them again (GoldClassifier.pool_probs).
"""
from __future__ import annotations

import hashlib
import heapq
import logging
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from potstill.config.quality import Audit, Student
from potstill.models.quality.fallback import GoldClassifier, coefficients, fit_with_embeddings
from potstill.rows.records import Bounds, Record, expand, read_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSample:
    rows: list[Record]     # the sampled pool rows, in sampling order
    unique_rows: int       # the valid pool rows they were drawn from (one per id, seed and test rows out)
    max_rows: int


def top_share(probs: np.ndarray, r: int, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool row indices in order, their pseudo-labels) round r of `rounds` trains on, from the
    previous round's pool probabilities [n, labels]: per class, the ceil(share r/(rounds+1)) of
    the rows predicted that class with the highest probability of it (ties: the earlier row)."""
    top = probs.argmax(1)
    keep: list[int] = []
    for label in range(probs.shape[1]):
        rows = np.flatnonzero(top == label)
        best = rows[np.argsort(-probs[rows, label], kind="stable")]
        keep += best[: int(np.ceil(len(rows) * r / (rounds + 1)))].tolist()
    keep_rows = np.sort(np.asarray(keep, dtype=int))
    return keep_rows, top[keep_rows]


def rounds(clf: GoldClassifier, x_seed: np.ndarray, y_seed: np.ndarray, x_pool: np.ndarray,
           total: int) -> Iterator[tuple[int, GoldClassifier, int]]:
    """(round, its classifier, pseudo-labelled pool rows) for rounds 1..`total` from round 0's
    `clf` (fitted on `x_seed`, `y_seed`), over the pool's unit-length embeddings `x_pool`."""
    probs = clf.predict(x_pool)
    for r in range(1, total + 1):
        rows, pseudo = top_share(probs, r, total)
        clf = replace(clf, **coefficients(np.concatenate([x_seed, x_pool[rows]]),
                                          np.concatenate([y_seed, pseudo]), clf.c))
        probs = clf.predict(x_pool)
        yield r, clf, len(rows)


def self_train(clf: GoldClassifier, x_seed: np.ndarray, y_seed: np.ndarray, x_pool: np.ndarray,
               total: int, record: dict | None = None) -> GoldClassifier:
    """The classifier after `total` rounds (0: `clf` itself), with `self_training` saying what
    was done (`record`'s entries too); skipped, and said, with one class or no pool rows."""
    if not total:
        return clf
    record = dict(record or {})
    why = ("the gold rows hold one label" if len(clf.classes) < 2 else
           "no pool rows to pseudo-label" if not len(x_pool) else None)
    if why:
        log.info("self-training of the fallback teacher skipped: %s", why)
        return replace(clf, self_training={"rounds": 0, "skipped": why, **record})
    per_round = []
    for r, clf, n in rounds(clf, x_seed, y_seed, x_pool, total):
        per_round.append(n)
        log.info("self-training round %d of %d: refitted on %d seed rows and %d pseudo-labelled "
                 "pool rows of %d", r, total, len(y_seed), n, len(x_pool))
    return replace(clf, self_training={"rounds": total, "pseudo_labelled": per_round, **record})


def fit(a: Audit, student: Student, labels: list[str], seeds, pool: PoolSample | None) -> GoldClassifier:
    """The fallback classifier (models/quality/fallback.py `fit`), then `audit.self_training_rounds`
    rounds on the `pool` sample (None, or 0 rounds: the classifier as fitted)."""
    clf, x, y, embed = fit_with_embeddings(a, student, labels, seeds)
    if pool is None or not a.self_training_rounds:
        return clf
    return self_train_on(clf, embed, x, y, pool, a.self_training_rounds)


def self_train_on(clf: GoldClassifier, embed, x_seed: np.ndarray, y_seed: np.ndarray,
                  pool: PoolSample, total: int) -> GoldClassifier:
    """`self_train` over the sample's rows embedded with `embed` (the gold encoder's unit-length
    embedder; not called with one class), and their final probabilities kept for the graph."""
    from potstill.models.embed_cache import text_key

    texts = [r.model_input for r in pool.rows] if len(clf.classes) > 1 else []
    if texts:
        log.info("self-training: embedding %d sampled pool rows of %d (audit.self_training_max_rows=%d)",
                 len(texts), pool.unique_rows, pool.max_rows)
    x_pool = embed(texts) if texts else np.zeros((0, 0))
    out = self_train(clf, x_seed, y_seed, x_pool, total,
                     {"pool_rows_sampled": len(texts), "pool_rows": pool.unique_rows,
                      "max_rows": pool.max_rows})
    if not texts or not out.self_training.get("rounds"):
        return out
    probs = out.predict(x_pool)
    return replace(out, pool_probs={text_key(t): tuple(map(float, p)) for t, p in zip(texts, probs)})


def pool_sample(src, labels: list[str], bounds: Bounds, max_rows: int, seed: int,
                exclude: set[str]) -> PoolSample:
    """Up to `max_rows` valid rows of the pool split `src` (a corpus source section), drawn as
    the module docstring says; ids in `exclude` (seed and test rows) are never drawn. Read one
    file at a time with the job's own reader and validation; rejected rows are left to the graph."""
    def rank(record_id: str) -> bytes:
        return hashlib.sha256(f"{seed}\0{record_id}".encode()).digest()

    kept: list[tuple[bytes, str, Record]] = []  # a heap of the best max_rows, by negated rank
    seen: set[str] = set()
    for file in expand(src.path):
        records, _, _ = read_file(file, source="corpus", text_field=src.text_field, labels=labels,
                                  bounds=bounds, choices_field=src.choices_field, encoding=src.encoding)
        for r in records:
            if r.id in exclude or r.id in seen:
                continue
            seen.add(r.id)
            item = (bytes(255 - b for b in rank(r.id)), r.id, r)
            (heapq.heappush if len(kept) < max_rows else heapq.heappushpop)(kept, item)
    rows = [r for _, _, r in sorted(kept, reverse=True)]  # smallest rank first
    return PoolSample(rows, len(seen), max_rows)
