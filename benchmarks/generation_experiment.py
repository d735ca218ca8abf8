"""Generation-distillation experiment: the student trained with vs without generated rows.

    python benchmarks/generation_experiment.py configs/rt-sentiment.yaml --work runs/generation-exp \
        [--unlabeled 100 --per-label 30 --generator smollm2-135m-instruct --threads 1 --seeds 0]

Both arms use the same config, seed rows, teacher and unlabeled rows (the first --unlabeled rows
of the corpus, so the unlabeled budget is equal); the second arm switches `generation` on. Each
step goes through the public CLI (`potstill run` / `potstill train` with --set overrides), so the
two versions and students sit under --work like any user's. The summary (stdout, JSON, and
WORK/summary.json) has test accuracy and macro-F1 per arm and student seed, a gold-only baseline,
and for the generated rows: how many were requested, published, rejected and filtered, by reason,
and how often the teacher agreed with the label the generator was asked for.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from potstill.beam_pipelines.demo import cli  # noqa: E402  (runs `python -m potstill ...`)
from potstill.config.core import load_config  # noqa: E402

RT_PROMPT = "Write one new short movie review whose sentiment is {label}. Reply with the review only."


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--work", default="runs/generation-exp")
    parser.add_argument("--unlabeled", type=int, default=100, help="unlabeled rows used by both arms")
    parser.add_argument("--per-label", type=int, default=30, help="generated outputs requested per label")
    parser.add_argument("--generator", default="smollm2-135m-instruct", help="null = the teacher")
    parser.add_argument("--prompt", default=RT_PROMPT, help="generation.prompt ({label} is replaced)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="student seeds")
    parser.add_argument("--gen-set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="extra override for the generation arm (e.g. generation.drop_label_mentions=true)")
    parser.add_argument("--skip-gold", action="store_true", help="skip the gold-only baseline")
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
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
    gold = None
    if not args.skip_gold:
        t = time.perf_counter()
        gold = json.loads(cli("train", "--dataset", str(versions["without_generated"]), "--config",
                              args.config, "--out", str(work / "students" / "gold-only"),
                              "--train-on", "seed", *sets(arms["without_generated"])))
        seconds["train_gold_only"] = round(time.perf_counter() - t, 1)

    summary = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
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
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
