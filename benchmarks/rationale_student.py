"""The student with and without saliency rationales, on the demo corpus.

    python benchmarks/rationale_student.py --work runs/rationale-exp [--teacher smollm2-135m-instruct \
        --method saliency --unlabeled 300 --test 200 --threads 1 --seeds 0 1]

One dataset version is built with the saliency stage on (the first --unlabeled corpus rows, all
seed rows); then per student seed two students train on it: `student.input=text` and
`student.input=text+rationale`. Both are scored on the same first --test test rows; the
text+rationale student is scored on text+rationale (test rationales from the teacher at
evaluation time) and on the bare text (`text_only`). Summary JSON on stdout and WORK/summary.json,
with the manifest's deletion test.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from potstill.beam_pipelines.pipeline import run  # noqa: E402
from potstill.models.student.trainer import train  # noqa: E402
from potstill.config.core import load_config  # noqa: E402

KEYS = ("accuracy", "macro_f1", "ece", "n")


def head(src: str, n: int, out: Path) -> str:
    pq.write_table(pq.read_table(src).slice(0, n), out)
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/rt-sentiment.yaml"))
    parser.add_argument("--work", required=True)
    parser.add_argument("--teacher", default="smollm2-135m-instruct")
    parser.add_argument("--method", default="saliency")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--unlabeled", type=int, default=300)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
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
            print(json.dumps(run_), file=sys.stderr, flush=True)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
