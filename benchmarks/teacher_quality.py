"""Teacher accuracy and speed: zero-shot vs few-shot vs few-shot + calibration, per model.

    python benchmarks/teacher_quality.py configs/rt-sentiment.yaml configs/r8-topics.yaml \
        --models qwen2.5-0.5b-instruct smollm2-135m-instruct --limit 200 [--k 4] [--threads 1]

Every setting runs in this one process, one after another, on the same test rows, so the
rows/second figures are comparable with each other (not with another machine or run).
Prints a markdown table; the JSON of every run goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys

from potstill.models.quality.evaluate import evaluate_teacher
from potstill.config.core import load_config

SETTINGS = {
    "zero-shot": {"teacher.few_shot.k": 0, "teacher.calibration": "none"},
    "few-shot": {"teacher.calibration": "none"},
    "few-shot + calibration": {"teacher.calibration": "contextual+temperature"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--models", nargs="+", default=["qwen2.5-0.5b-instruct", "smollm2-135m-instruct"])
    parser.add_argument("--limit", type=int, default=200, help="test rows per run")
    parser.add_argument("--k", type=int, default=None, help="demonstrations (default: one per label, at least 4)")
    parser.add_argument("--style", default="labels", choices=["labels", "letters"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the teacher")
    args = parser.parse_args(argv)

    print("| corpus | teacher | setting | accuracy | macro-F1 | ECE | rows/s |")
    print("|---|---|---|---|---|---|---|")
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
                print(json.dumps({"config": path, "model": model, "setting": name, **m}), file=sys.stderr)
                print(f"| {base.dataset} | {model} | {name} | {m['accuracy']:.3f} | "
                      f"{m['macro_f1']:.3f} | {m['ece']:.3f} | {m['rows_per_second']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
