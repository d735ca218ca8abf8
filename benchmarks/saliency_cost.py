"""Saliency rationales: cost per row of each attribution method relative to one teacher forward,
and the deletion-test faithfulness of each method, on the demo corpus.

    python -m benchmarks.saliency_cost --models smollm2-135m-instruct qwen2.5-0.5b-instruct \
        --rows 8 --repeats 3 --faithfulness-rows 32 [--out results.json] [--tiny]

Cost: per model, the same `--rows` demo rows are scored by the teacher (`score_labels`, its
forward with the cached prompt prefix) and explained by every method, interleaved within each
repeat, all in this one process; medians over `--repeats`. On a shared machine, compare ratios,
not seconds. Faithfulness: every method explains the teacher's label on `--faithfulness-rows`
other demo rows, then the deletion test of models/saliency/faithfulness.py runs on them (rows with no more
words than top_k are skipped). Integrated gradients also reports its convergence: the median
|captum delta| relative to |f(x) - f(baseline)|. Prints markdown; JSON per result to stderr.
"""
from __future__ import annotations

import statistics
import sys
import time
import warnings

import numpy as np
import pyarrow.parquet as pq

from benchmarks.harness import Benchmark
from potstill.models.saliency.attribution import METHODS, Explainer
from potstill.models.quality.audit import build_teacher
from potstill.models.teacher.calibration import Calibration
from potstill.models.saliency.faithfulness import deletion_test
from potstill.models.registry import resolve_model
from potstill.config.core import load_config

warnings.filterwarnings("ignore", message="Input Tensor")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def ig_relative_delta(found) -> float:
    """median |delta| / |f(x) - f(b)|, with f(x) - f(b) = sum of attributions - delta."""
    rel = [abs(e.delta) / max(abs(float(e.word_scores.sum()) - e.delta), 1e-9) for e in found]
    return float(np.median(rel))


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("saliency_cost", __doc__, repeats=3, threads=1, tiny={
        "config": lambda ws: ws.config, "models": lambda ws: [ws.teacher], "rows": 2, "repeats": 1,
        "faithfulness_rows": 4, "ig_steps": 4, "top_k": 2, "internal_batch_size": 8})
    parser = bench.parser
    parser.add_argument("--config", default="configs/rt-sentiment.yaml")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--rows", type=int, default=8, help="rows timed per repeat")
    parser.add_argument("--faithfulness-rows", type=int, default=32)
    parser.add_argument("--faithfulness-methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4, help="saliency rows per pass")
    parser.add_argument("--internal-batch-size", type=int, default=32)
    args = bench.parse(argv)

    texts = pq.read_table(load_config(args.config).corpus.unlabeled.path)["text"].to_pylist()
    timed_rows = texts[: args.rows]
    faith_rows = texts[args.rows: args.rows + args.faithfulness_rows]
    rows = []
    for model in args.models:
        cfg = load_config(args.config, [f"teacher.model={model}", f"teacher.threads={args.threads}"])
        lt = build_teacher(cfg, resolve_model(model).path, [], Calibration(), backend="hf")
        explainers = {m: Explainer(lt, m, top_k=args.top_k, ig_steps=args.ig_steps,
                                   batch_size=args.batch_size,
                                   internal_batch_size=args.internal_batch_size)
                      for m in args.methods}
        labels = [lt.teacher.labels[i] for i in lt.score(timed_rows)[1].argmax(1)]  # warm-up too
        seconds: dict[str, list[float]] = {"teacher": [], **{m: [] for m in args.methods}}
        for _ in range(args.repeats):
            seconds["teacher"].append(timed(lambda: lt.score(timed_rows))[0])
            for m, ex in explainers.items():
                seconds[m].append(timed(lambda: ex.explain(timed_rows, labels))[0])
        per_row = {k: statistics.median(v) / len(timed_rows) for k, v in seconds.items()}
        rows.append({"model": model, "method": "teacher forward (score_labels)",
                     "seconds_per_row": per_row["teacher"], "x_teacher_forward": 1.0,
                     "timings": seconds["teacher"]})

        _, logp = lt.score(faith_rows)
        faith_labels = [lt.teacher.labels[i] for i in logp.argmax(1)]
        for m, ex in explainers.items():
            run_test = faith_rows and m in args.faithfulness_methods
            found = ex.explain(faith_rows, faith_labels) if run_test else []
            explained = [{"id": str(i), "text": t, "rationale": e.rationale, "label": l}
                         for i, (t, e, l) in enumerate(zip(faith_rows, found, faith_labels))]
            test = deletion_test(lt, explained, seed=0) if explained else {"n": 0}
            rel = ig_relative_delta(found) if m == "integrated_gradients" and found else None
            rows.append({"model": model, "method": f"{m} ({args.ig_steps} steps)"
                         if m == "integrated_gradients" else m, "seconds_per_row": per_row[m],
                         "x_teacher_forward": per_row[m] / per_row["teacher"],
                         "timings": seconds[m], "deletion_test": test, "ig_median_relative_delta": rel})
            bench.progress(rows[-1])
        del explainers, lt

    def deletion(r, key, spec):
        test = r.get("deletion_test") or {}
        return format(test[key], spec) if test.get("n") else "-"
    return bench.report(rows, {
        "teacher": "model", "method": "method", "s/row": "seconds_per_row:.3f",
        "x teacher forward": "x_teacher_forward:.1f",
        "deletion: drop top-k": lambda r: deletion(r, "mean_drop_topk", ".3f"),
        "drop random": lambda r: deletion(r, "mean_drop_random", ".3f"),
        "top-k beats random": lambda r: deletion(r, "frac_topk_beats_random", ".2f")
        + (f" (n={r['deletion_test']['n']})" if (r.get("deletion_test") or {}).get("n") else ""),
        "IG rel. delta": "ig_median_relative_delta:.2f"})


if __name__ == "__main__":
    sys.exit(main())
