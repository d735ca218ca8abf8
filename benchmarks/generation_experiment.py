"""Generation-distillation experiment: the student trained with vs without generated rows.

    python -m benchmarks.generation_experiment configs/rt-sentiment.yaml --work runs/generation-exp \
        [--unlabeled 100 --per-label 30 --generator smollm2-135m-instruct --threads 1 --seeds 0] \
        [--out results.json] [--tiny]

Both arms use the same config, seed rows, teacher and unlabeled rows (the first --unlabeled rows
of the corpus, so the unlabeled budget is equal); the second arm switches `generation` on. Each
step goes through the public CLI (`potstill run` / `potstill train` with --set overrides, in this
process, so the models load once); the two versions and students sit under --work like any
user's. The summary (table on stdout, WORK/summary.json, --out) has test accuracy and macro-F1
per arm and student seed, a gold-only baseline, and for the generated rows: how many were
requested, published, rejected and filtered, by reason, and how often the teacher agreed with
the label the generator was asked for. `--tiny`: the synthetic corpus, the tiny Llama as
teacher and generator (two new tokens: its longer outputs are mostly invalid UTF-8), the tiny
BERT as student, one seed.
"""
from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.harness import Benchmark
from potstill.beam_pipelines.cli import main as potstill_main
from potstill.config.core import load_config

RT_PROMPT = "Write one new short movie review whose sentiment is {label}. Reply with the review only."


def cli(*args: str) -> str:
    """`potstill ARGS` through the public CLI, in this process; its last stdout line (the result)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = potstill_main(list(args))
    if code:
        raise SystemExit(f"potstill {args[0]} failed with exit code {code}")
    return out.getvalue().strip().splitlines()[-1]


def sets(overrides: dict) -> list[str]:
    out = []
    for key, value in overrides.items():
        out += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML: strings stay strings
    return out


def generated_report(version: Path, labels: list[str]) -> dict:
    read = json.loads((version / "manifest.json").read_text())["counts"]["read"].get("generated", 0)
    rejected = [r for r in pq.read_table(version / "rejected.parquet").to_pylist() if r["source"] == "generated"]
    filtered = [r for r in pq.read_table(version / "filtered.parquet").to_pylist() if r["source"] == "generated"]
    published = [r for r in pq.read_table(version / "data").to_pylist() if r["source"] == "generated"]
    agree = sum(r["intended_label"] == r["teacher_label"] for r in published)
    return {
        "requested": read,
        "published": len(published),
        "kept_fraction": round(len(published) / read, 3) if read else None,
        "rejected_by_reason": dict(Counter(r["reason"] for r in rejected).most_common()),
        "filtered_by_reason": dict(Counter(r["filter_reason"] for r in filtered).most_common()),
        "teacher_agrees_with_intended_label": round(agree / len(published), 3) if published else None,
        "published_by_teacher_label": dict(Counter(r["teacher_label"] for r in published)),
        "examples": [{"intended": r["intended_label"], "teacher": r["teacher_label"],
                      "confidence": round(r["teacher_confidence"], 3), "text": r["text"][:160]}
                     for r in published[:8]],
        "rejected_examples": [{"reason": r["reason"], "raw": (r["raw"] or "")[:160]} for r in rejected[:6]],
    }


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("generation_experiment", __doc__, work="runs/generation-exp", seeds=[0], threads=1,
                      tiny={"config": lambda ws: ws.config, "generator": lambda ws: ws.teacher,
                            "unlabeled": 16, "per_label": 4, "max_new_tokens": 2,
                            "gen_set": ["generation.min_chars=1", "generation.min_letter_share=0",
                                        "generation.drop_truncated=false"]})
    parser = bench.parser
    parser.add_argument("config", nargs="?")
    parser.add_argument("--unlabeled", type=int, default=100, help="unlabeled rows used by both arms")
    parser.add_argument("--per-label", type=int, default=30, help="generated outputs requested per label")
    parser.add_argument("--generator", default="smollm2-135m-instruct", help="null = the teacher")
    parser.add_argument("--prompt", default=RT_PROMPT, help="generation.prompt ({label} is replaced)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--gen-set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="extra override for the generation arm (e.g. generation.drop_label_mentions=true)")
    parser.add_argument("--skip-gold", action="store_true", help="skip the gold-only baseline")
    args = bench.parse(argv)
    bench.require("config")

    cfg = load_config(args.config)
    work = bench.work()
    unlabeled = work / f"unlabeled-{args.unlabeled}.parquet"
    table = pq.read_table(cfg.corpus.unlabeled.path)
    pq.write_table(table.slice(0, args.unlabeled), unlabeled)

    common = {"output_root": str(work / "datasets"), "corpus.unlabeled.path": str(unlabeled),
              "teacher.threads": args.threads, "student.threads": args.threads}
    arms = {
        "without_generated": {**common, "dataset": "rt-gen-off"},
        "with_generated": {**common, "dataset": "rt-gen-on", "generation.enabled": True,
                           "generation.model": None if args.generator == "null" else args.generator,
                           "generation.per_label": args.per_label, "generation.prompt": args.prompt,
                           "generation.max_new_tokens": args.max_new_tokens,
                           "generation.batch_size": 10},
    }
    extra = [x for item in args.gen_set for x in ("--set", item)]
    seconds, versions, results = {}, {}, {}
    for arm, overrides in arms.items():
        t = time.perf_counter()
        versions[arm] = Path(cli("run", args.config, *sets(overrides),
                                 *(extra if arm == "with_generated" else [])))
        seconds[f"run_{arm}"] = round(time.perf_counter() - t, 1)
    for arm, overrides in arms.items():
        for seed in args.seeds:
            t = time.perf_counter()
            out = work / "students" / f"{arm}-seed{seed}"
            metrics = json.loads(cli("train", "--dataset", str(versions[arm]), "--config", args.config,
                                     "--out", str(out), *sets({**overrides, "student.seed": seed})))
            results.setdefault(arm, []).append({k: metrics[k] for k in ("accuracy", "macro_f1", "n", "train_rows")})
            seconds[f"train_{arm}_seed{seed}"] = round(time.perf_counter() - t, 1)
            bench.progress({"arm": arm, "seed": seed, **results[arm][-1]})
    gold = None
    if not args.skip_gold:
        t = time.perf_counter()
        gold = json.loads(cli("train", "--dataset", str(versions["without_generated"]), "--config",
                              args.config, "--out", str(work / "students" / "gold-only"),
                              "--train-on", "seed", *sets(arms["without_generated"])))
        seconds["train_gold_only"] = round(time.perf_counter() - t, 1)

    summary = {
        "unlabeled_rows": args.unlabeled, "generator": args.generator, "per_label": args.per_label,
        "versions": {k: str(v) for k, v in versions.items()},
        "students": {arm: {"runs": rs, "mean_accuracy": round(statistics.mean(r["accuracy"] for r in rs), 4),
                           "mean_macro_f1": round(statistics.mean(r["macro_f1"] for r in rs), 4)}
                     for arm, rs in results.items()},
        "gold_only": gold and {k: gold[k] for k in ("accuracy", "macro_f1", "n", "train_rows")},
        "generated": generated_report(versions["with_generated"], cfg.task.labels),
        "seconds": seconds,
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    rows = [{"student": arm.replace("_", " "), "seeds": len(s["runs"]), "accuracy": s["mean_accuracy"],
             "macro_f1": s["mean_macro_f1"], "train_rows": statistics.mean(r["train_rows"] for r in s["runs"])}
            for arm, s in summary["students"].items()]
    if gold:
        rows.append({"student": "gold rows only", "seeds": 1, "accuracy": gold["accuracy"],
                     "macro_f1": gold["macro_f1"], "train_rows": gold["train_rows"]})
    g = summary["generated"]
    return bench.report(rows, {"student": "student", "seeds": "seeds", "train rows (mean)": "train_rows:.0f",
                               "test accuracy (mean)": "accuracy:.3f", "macro-F1 (mean)": "macro_f1:.3f"},
                        title=f"{args.unlabeled} unlabeled rows; generator {args.generator}, {args.per_label} "
                              f"per label",
                        notes=[f"generated: {g['requested']} requested, {g['published']} published, "
                               f"rejected {g['rejected_by_reason']}, filtered {g['filtered_by_reason']}; "
                               f"teacher agrees with the intended label on {g['teacher_agrees_with_intended_label']}"],
                        **{k: v for k, v in summary.items() if k not in ("students", "seconds")},
                        students=summary["students"], step_seconds=summary["seconds"])


if __name__ == "__main__":
    sys.exit(main())
