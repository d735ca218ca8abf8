"""How good can the student get from this many rows? The same published version with every pool
row's teacher label replaced by its true label (read back from the demo corpus's package), the
student trained on it: the ceiling a perfect teacher would give at this pool size.

    python -m benchmarks.student_ceiling potstill-datasets/rt-sentiment/v1 configs/rt-sentiment.yaml \
        --corpus rt --work runs/ceiling-rt [--seeds 0 1 2] [--threads 1] [--out results.json] [--tiny]

Prints the oracle student's test accuracy per seed (mean ± sd) next to how often the teacher's
published labels were right on the same pool rows. Pool rows whose true label cannot be found
are dropped (and counted). `--tiny`: a version of the synthetic corpus (labelled by the tiny
Llama) and its true labels, the tiny BERT as student, one seed.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.harness import Benchmark, mean_sd
from benchmarks.llkd_experiment import hidden_labels, pool_label_accuracy, write_version
from potstill.config.core import load_config


def oracle_rows(table: pa.Table, gold: dict[str, str], labels: list[str]) -> tuple[pa.Table, int]:
    """Pool rows relabelled with their true label (one-hot label_probs); seed rows unchanged."""
    rows, dropped = [], 0
    for r in table.to_pylist():
        if r["source"] != "seed":
            if r["id"] not in gold:
                dropped += 1
                continue
            r["label"] = gold[r["id"]]
            r["label_probs"] = [float(label == r["label"]) for label in labels]
        rows.append(r)
    return pa.Table.from_pylist(rows, schema=table.schema), dropped


def main(argv=None) -> int:
    bench = Benchmark("student_ceiling", __doc__, seeds=[0, 1, 2], threads=1, tiny={
        "version": lambda ws: ws.version(), "config": lambda ws: ws.config, "seeds": [0],
        "corpus": lambda ws: str(ws.data / "hidden_labels.parquet")})
    parser = bench.parser
    parser.add_argument("version", nargs="?")
    parser.add_argument("config", nargs="?")
    parser.add_argument("--corpus", metavar="rt|r8|PARQUET",
                        help="the demo corpus (or Parquet file of text, label) with the pool's true labels")
    args = bench.parse(argv)
    bench.require("version", "config", "corpus", "work")
    from potstill.models.student.trainer import train

    work, version = bench.work(), Path(args.version)
    labels = json.loads((version / "manifest.json").read_text())["labels"]
    table = pq.read_table(version / "data")
    gold = hidden_labels(args.corpus)
    rows, dropped = oracle_rows(table, gold, labels)
    folder = write_version(rows, work / "oracle", labels, "oracle")
    results = []
    for seed in args.seeds:
        out = work / "students" / f"oracle-s{seed}"
        if (out / "metrics.json").is_file():
            results.append(json.loads((out / "metrics.json").read_text()))
            continue
        cfg = load_config(args.config, [f"student.seed={seed}", f"student.threads={args.threads}",
                                        "student.recipe=kd", "student.temperature=1"])
        results.append(train(folder, cfg, out))
    acc = [r["accuracy"] for r in results]
    summary = {"version": str(version), "pool_rows": sum(s != "seed" for s in table["source"].to_pylist()),
               "pool_rows_dropped": dropped,
               "teacher_labels_right_on_pool": pool_label_accuracy(table, gold),
               "oracle_student_accuracy": acc,
               "mean": statistics.mean(acc), "sd": statistics.stdev(acc) if len(acc) > 1 else 0.0}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    return bench.report([summary], {
        "version": "version", "pool rows": "pool_rows", "dropped (no true label)": "pool_rows_dropped",
        "teacher labels right on pool": "teacher_labels_right_on_pool:.3f",
        "oracle student accuracy": lambda r: mean_sd(r["oracle_student_accuracy"])})


if __name__ == "__main__":
    sys.exit(main())
