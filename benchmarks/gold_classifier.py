"""The gold-rows classifier (LR on the student encoder's embeddings of the seed rows,
models/quality/trust.py) on the test split: what the gold rows alone reach without fine-tuning.

    python -m benchmarks.gold_classifier CONFIG.yaml [--set key.path=value ...] [--threads 1]
        [--out results.json] [--tiny]

C is chosen by cross-validation on the seed rows (student.probe_c, student.probe_folds), as the
trust recipe chooses it. `--tiny`: the tiny BERT's embeddings on the synthetic corpus.
"""
from __future__ import annotations

import sys

import numpy as np

from benchmarks.harness import Benchmark
from potstill.config.core import load_config
from potstill.models.embed import Embedder
from potstill.models.quality.audit import read_seed
from potstill.models.quality.trust import choose_c, fit_gold_classifier
from potstill.models.registry import resolve_model
from potstill.rows.records import read_configured


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("gold_classifier", __doc__, threads=1, sets=[], tiny={"config": lambda ws: ws.config})
    bench.parser.add_argument("config", nargs="?")
    args = bench.parse(argv)
    bench.require("config")
    import torch

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.sets)
    labels = cfg.task.labels
    seeds, (test, _) = read_seed(cfg), read_configured(cfg, "test")
    emb = Embedder(resolve_model(cfg.student.model).path, max_length=cfg.student.max_length)
    x, y = emb([r.model_input for r in seeds]), np.array([labels.index(r.gold_label) for r in seeds])
    tx, ty = emb([r.model_input for r in test]), np.array([labels.index(r.gold_label) for r in test])
    c, _, _ = choose_c(x, y, len(labels), cfg.student.probe_c, cfg.student.probe_folds)
    pred = fit_gold_classifier(x, y, len(labels), c)(tx).argmax(1)
    rows = [{"config": args.config, "student": cfg.student.model, "seed_rows": len(seeds), "c": c,
             "test_rows": len(ty), "accuracy": float((pred == ty).mean())}]
    return bench.report(rows, {"config": "config", "encoder": "student", "seed rows": "seed_rows",
                               "C": "c", "test rows": "test_rows", "test accuracy": "accuracy:.3f"})


if __name__ == "__main__":
    sys.exit(main())
