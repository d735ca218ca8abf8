"""The student with and without saliency rationales, on the demo corpus.

    python -m benchmarks.rationale_student --work runs/rationale-exp [--teacher smollm2-135m-instruct \
        --method saliency --unlabeled 300 --test 200 --threads 1 --seeds 0 1] [--out results.json] [--tiny]

One dataset version is built with the saliency stage on (the first --unlabeled corpus rows, all
seed rows); then per student seed two students train on it: `student.input=text` and
`student.input=text+rationale`. Both are scored on the same first --test test rows; the
text+rationale student is scored on text+rationale (test rationales from the teacher at
evaluation time) and on the bare text (`text_only`). Summary JSON on stdout and WORK/summary.json,
with the manifest's deletion test. `--tiny`: the synthetic corpus, the tiny Llama as teacher,
the tiny BERT as student, one seed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.harness import ROOT, Benchmark
from potstill.beam_pipelines.pipeline import run
from potstill.config.core import load_config
from potstill.models.student.trainer import train

KEYS = ("accuracy", "macro_f1", "ece", "n")


def head(src: str, n: int, out: Path) -> str:
    pq.write_table(pq.read_table(src).slice(0, n), out)
    return str(out)


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("rationale_student", __doc__, seeds=[0], threads=1, tiny={
        "config": lambda ws: ws.config, "teacher": lambda ws: ws.teacher, "top_k": 2, "unlabeled": 16,
        "test": 8})
    parser = bench.parser
    parser.add_argument("--config", default=str(ROOT / "configs/rt-sentiment.yaml"))
    parser.add_argument("--teacher", default="smollm2-135m-instruct")
    parser.add_argument("--method", default="saliency")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--unlabeled", type=int, default=300)
    parser.add_argument("--test", type=int, default=200)
    args = bench.parse(argv)
    bench.require("work")

    work = bench.work()
    base = load_config(args.config)
    overrides = [f"output_root={work / 'datasets'}", f"teacher.model={args.teacher}",
                 f"teacher.threads={args.threads}", f"student.threads={args.threads}",
                 "saliency.enabled=true", f"saliency.method={args.method}", f"saliency.top_k={args.top_k}",
                 f"corpus.unlabeled.path={head(base.corpus.unlabeled.path, args.unlabeled, work / 'unlabeled.parquet')}",
                 f"corpus.test.path={head(base.corpus.test.path, args.test, work / 'test.parquet')}"]
    cfg = load_config(args.config, overrides)
    version = run(cfg)  # DirectRunner
    summary = {"version": str(version), "teacher": args.teacher, "method": args.method,
               "saliency": json.loads((version / "manifest.json").read_text()).get("saliency"),
               "runs": []}
    for seed in args.seeds:
        for student_input in ("text", "text+rationale"):
            arm = load_config(args.config, overrides + [f"student.seed={seed}", f"student.input={student_input}"])
            m = train(version, arm, work / f"student-{student_input.replace('+', '-')}-{seed}")
            run_ = {"seed": seed, "input": student_input, **{k: m[k] for k in KEYS}}
            if "text_only" in m:
                run_["text_only"] = {k: m["text_only"][k] for k in KEYS}
                run_["test_rationale_seconds"] = m["test_rationale_seconds"]
            summary["runs"].append(run_)
            bench.progress(run_)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return bench.report(summary["runs"], {
        "seed": "seed", "student input": "input", "accuracy": "accuracy:.3f", "macro-F1": "macro_f1:.3f",
        "ECE": "ece:.3f", "test rows": "n",
        "on the bare text: accuracy": lambda r: f"{r['text_only']['accuracy']:.3f}" if "text_only" in r else "-",
        "test rationales (s)": "test_rationale_seconds:.1f"},
        title=f"{version}: teacher {args.teacher}, rationales by {args.method}",
        **{k: v for k, v in summary.items() if k != "runs"})


if __name__ == "__main__":
    sys.exit(main())
