"""`make demo`: build the demo corpus, run the job, score the teacher on the test split, train
the student (with its gold-only baseline), and show the three side by side.

    python -m potstill.beam_pipelines.demo configs/rt-sentiment.yaml [--runs runs/rt]

Every step goes through the public `potstill` CLI, exactly as a user would run it; the summary
at the end reads the version's manifest, the teacher's test metrics and the student's metrics.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from potstill.config.core import load_config


def cli(*args: str) -> str:
    """Run `python -m potstill ARGS`; return its last stdout line (the result)."""
    proc = subprocess.run([sys.executable, "-m", "potstill", *args],
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"potstill {args[0]} failed with exit code {proc.returncode}")
    return proc.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--runs", default="runs/rt-sentiment")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    data_dir = Path(cfg.corpus.unlabeled.path).parent
    timings = {}

    start = time.perf_counter()
    if not (data_dir / "test.parquet").exists():
        subprocess.run([sys.executable, "-m", "potstill.beam_pipelines.demo_data", "--out", str(data_dir)],
                       check=True)
    t = time.perf_counter()
    version = Path(cli("run", args.config))
    timings["run"] = time.perf_counter() - t
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()  # the teacher on the test split, set up as the job used it
    teacher = json.loads(cli("evaluate", args.config, "--model", "teacher",
                             "--out", str(runs / "teacher.json")))
    timings["evaluate_teacher"] = time.perf_counter() - t
    t = time.perf_counter()  # the student, with its gold-only baseline in runs/student/gold-only
    student = json.loads(cli("train", "--dataset", str(version), "--config", args.config,
                             "--out", str(runs / "student"),
                             "--compare", f"teacher={runs / 'teacher.json'}"))
    timings["train"] = time.perf_counter() - t
    baseline = student["baselines"]["gold-only"]

    manifest = json.loads((version / "manifest.json").read_text())
    totals, audit = manifest["counts"]["totals"], manifest["teacher_audit"]
    summary = {
        "version": str(version),
        "rows": totals,
        "rejected_by_reason": manifest["counts"]["rejected"],
        "filtered_by_reason": manifest["counts"]["filtered"],
        "teacher_accuracy_on_seed": audit.get("accuracy"),
        "teacher_rows_per_second": manifest.get("throughput", {}).get("teacher_rows_per_second"),
        "student_accuracy": student["accuracy"], "student_macro_f1": student["macro_f1"],
        "gold_only_accuracy": baseline["accuracy"], "gold_only_macro_f1": baseline["macro_f1"],
        "teacher_accuracy": teacher["accuracy"], "teacher_macro_f1": teacher["macro_f1"],
        "test_rows": student["n"],
        "seconds": {k: round(v, 1) for k, v in timings.items()}
                   | {"total": round(time.perf_counter() - start, 1)},
    }
    print(f"dataset version   {version}", file=sys.stderr)
    print(f"rows              read {totals['read']}: published {totals['published']}, "
          f"rejected {totals['rejected']}, filtered {totals['filtered']}", file=sys.stderr)
    if audit.get("accuracy") is not None:
        print(f"teacher on seed   accuracy {audit['accuracy']:.3f} (n={audit['n']})", file=sys.stderr)
    print(f"student (test)    accuracy {student['accuracy']:.3f}, macro-F1 {student['macro_f1']:.3f} "
          f"(n={student['n']})", file=sys.stderr)
    print(f"gold-only (test)  accuracy {baseline['accuracy']:.3f}, macro-F1 {baseline['macro_f1']:.3f}",
          file=sys.stderr)
    print(f"teacher (test)    accuracy {teacher['accuracy']:.3f}, macro-F1 {teacher['macro_f1']:.3f}",
          file=sys.stderr)
    print(f"report            {runs / 'student' / 'report.html'}", file=sys.stderr)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
