"""Teacher accuracy and speed: zero-shot vs few-shot vs few-shot + calibration, per model.

    python -m benchmarks.teacher_quality configs/rt-sentiment.yaml configs/r8-topics.yaml \
        --models qwen2.5-0.5b-instruct smollm2-135m-instruct --limit 200 [--k 4] [--threads 1] \
        [--out results.json] [--tiny]

Every setting runs in this one process, one after another, on the same test rows, so the
rows/second figures are comparable with each other (not with another machine or run).
Prints a markdown table; the JSON of every run goes to stderr. `--tiny`: the tiny Llama on the
synthetic corpus's config, 8 test rows, 2 demonstrations.
"""
from __future__ import annotations

import sys

from benchmarks.harness import Benchmark
from potstill.config.core import load_config
from potstill.models.quality.evaluate import evaluate_teacher

SETTINGS = {
    "zero-shot": {"teacher.few_shot.k": 0, "teacher.calibration": "none"},
    "few-shot": {"teacher.calibration": "none"},
    "few-shot + calibration": {"teacher.calibration": "contextual+temperature"},
}


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("teacher_quality", __doc__, threads=None, tiny={
        "configs": lambda ws: [ws.config], "models": lambda ws: [ws.teacher], "limit": 8, "k": 2})
    parser = bench.parser
    parser.add_argument("configs", nargs="*")
    parser.add_argument("--models", nargs="+", default=["qwen2.5-0.5b-instruct", "smollm2-135m-instruct"])
    parser.add_argument("--limit", type=int, default=200, help="test rows per run")
    parser.add_argument("--k", type=int, default=None, help="demonstrations (default: one per label, at least 4)")
    parser.add_argument("--style", default="labels", choices=["labels", "letters"])
    args = bench.parse(argv)
    bench.require("configs")

    rows = []
    for path in args.configs:
        base = load_config(path)
        k = args.k or max(4, len(base.task.labels))
        for model in args.models:
            for name, setting in SETTINGS.items():
                overrides = [f"teacher.model={model}", f"teacher.few_shot.k={k}",
                             f"teacher.prompt_style={args.style}"]
                overrides += [f"{key}={value}" for key, value in setting.items()]
                if args.threads:
                    overrides.append(f"teacher.threads={args.threads}")
                m = evaluate_teacher(load_config(path, overrides), limit=args.limit)
                rows.append({**m, "config": path, "corpus": base.dataset, "model": model, "setting": name})
                bench.progress(rows[-1])
    return bench.report(rows, {
        "corpus": "corpus", "teacher": "model", "setting": "setting", "accuracy": "accuracy:.3f",
        "macro-F1": "macro_f1:.3f", "ECE": "ece:.3f", "rows/s": "rows_per_second:.2f"})


if __name__ == "__main__":
    sys.exit(main())
