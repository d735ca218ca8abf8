"""Memory and time at scale: the whole job on a synthetic corpus of N rows with a tiny random
teacher; peak RSS of the run and wall time (and RSS) per stage.

    python -m benchmarks.scale --rows 10000 100000 1000000 [--work runs/scale] [--threads 1]
        [--runner-args "--direct_num_workers=2 --direct_running_mode=multi_processing"]
    python -m benchmarks.scale --after-graph --rows 10000 100000 1000000 [--code DIR]
        [--chunk-rows N]
    python -m benchmarks.scale --rows 10000 --repeats 2 --code OLD_SITE . (A/B, alternating)
    python -m benchmarks.scale --rows 200000 --rerun (then the same job again: the store answers)
    [--set audit.search.few_shot_k=[0]] [--out results.json] [--tiny]

The whole job's table also gives the time outside the model, per row per core: (wall * cores -
model seconds) / rows, the core-seconds the models did not use, for the whole job and for the
Beam graph alone. Model seconds are the teacher's own timed inference, summed over the workers
(what its store segments record: the manifest's `throughput`), plus the demonstration
selector's embedder (the teacher stage's `demo_selection_micros` Beam
counter; for code without it, its calls timed in the driver process). Cores: 1 in process,
else `--direct_num_workers` (at most the machine's). `gc`: the child's garbage collections per
generation (0 young .. 2 full) and their seconds (`gc.callbacks`; worker processes not
included). `--code A B`: each size runs with each place's potstill in turn, `--repeats` times;
the table gives the median run of each.

--after-graph measures everything after the Beam graph alone (`potstill.job.finish`: curation,
files, gate, counts, publish, report) on N synthetic staged rows written as the graph writes
them (50,000-row shards, plus filtered and rejected shards), without a model; `--code DIR`
runs it with another checkout's potstill (e.g. the code before streaming) for comparison.

Each size runs in a fresh child process (so one size's memory cannot leak into the next), on
the default in-process DirectRunner unless --runner-args says otherwise. The corpus is unique
short synthetic reviews in one Parquet file, 20 gold seed rows; the teacher is the tests' tiny
random Llama (models/tiny.py, saved once as a local HF folder under --work), torch
threads 1. The stages are timed by wrapping the functions the driver calls (plan, audit, the
Beam graph, prepare_version = DuckDB curation + streamed files, validate_file = the GE gate in
chunks, publish = move in + card + report); `peak_rss_mb` is the child's maximum resident set
(getrusage) once the stage has ended, `rss_mb` its resident set then. Beam worker processes
(multi-process runners) are not in the child's figure. `--tiny`: 40 rows.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import ROOT, Benchmark

STAGES = (("plan", "potstill.job", "plan"), ("audit", "potstill.beam_pipelines.pipeline", "audit_teacher"),
          ("beam_graph", "potstill.beam_pipelines.pipeline", "run_rounds"),
          ("curate_and_write", "potstill.job", "prepare_version"),
          ("validate", "potstill.publish.expectations", "validate_file"),
          ("publish_and_report", "potstill.publish.versions", "publish"))
# After the graph: the streaming stages, and the whole-table ones of older code (--code).
AFTER = STAGES[3:] + (("curate_whole_table", "potstill.publish.curation", "curate"),
                      ("validate_whole_table", "potstill.publish.expectations", "validate"))
WORDS = ("good bad dull fine great awful plot acting score pacing dialogue cast story ending "
         "music scene film movie director camera").split()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_corpus(folder: Path, rows: int) -> tuple[str, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    unl = folder / f"unlabeled-{rows}.parquet"
    if not unl.exists():
        n = len(WORDS)
        texts = [f"review {i}: the {WORDS[i % n]} was {WORDS[(i // n) % n]} and {WORDS[(i // n // n) % n]}"
                 for i in range(rows)]
        pq.write_table(pa.table({"text": texts}), unl, row_group_size=100_000)
    seed = folder / "seed.jsonl"
    seed.write_text("".join(json.dumps({"text": f"gold {i} {WORDS[i]}", "label": ("negative", "positive")[i % 2]})
                            + "\n" for i in range(20)))
    return str(unl), str(seed)


def _with_settings(cfg: dict, settings: list[str]) -> dict:
    """`cfg` with each `dotted.key=JSON value` of `--set` put in (e.g.
    `audit.search.few_shot_k=[0]`, `teacher.batch_size=128`)."""
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {setting!r}: expected dotted.key=JSON value")
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = json.loads(value)
    return cfg


def child(rows: int, work: Path, threads: int, runner_args: list[str],
          settings: list[str] = (), output_root: str | None = None) -> dict:
    """One run, in this (fresh) process: per-stage seconds and memory. `output_root`: an
    earlier run's (--rerun: another dataset, so the job runs again, and its teacher store
    answers every row), else a new one."""
    import torch

    torch.set_num_threads(threads)
    from potstill.models.tiny import build_tiny_lm

    model = work / "tiny-lm"
    if not (model / "config.json").exists():
        build_tiny_lm(model)
    unl, seed = write_corpus(work / "corpus", rows)
    stages: dict[str, dict] = {}
    for stage in STAGES:
        _wrap(stages, *stage)
    from potstill.beam_pipelines.pipeline import run
    from potstill.config.core import parse_config

    cfg = parse_config(_with_settings({
        "dataset": f"scale-{rows}" + ("-rerun" if output_root else ""),
        "output_root": output_root or str(work / f"out-{rows}-{time.time_ns()}"),
        "task": {"labels": ["negative", "positive"]},
        "corpus": {"unlabeled": {"path": unl}, "seed": {"path": seed, "label_field": "label"}},
        "teacher": {"model": str(model), "batch_size": 64, "threads": threads}}, settings))
    embed = _time_embedder()  # after the stages' wrappers: it tells the graph's calls apart
    counters = _teacher_counters()
    collections = _time_collections()
    start, cpu = time.perf_counter(), _cpu_seconds()
    version = run(cfg, runner_args)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    manifest = json.loads((version / "manifest.json").read_text())
    totals = manifest["counts"]["totals"]
    # the model's own time: the teacher's timed inference (recorded in the store with every
    # batch: the manifest's throughput), and the demonstration selector's embedder (a Beam
    # counter; an older checkout without it: the embedder's calls timed in this process)
    teacher_s = manifest.get("throughput", {}).get("teacher_seconds", 0.0)
    demos_s = counters.get("demo_selection_micros", 0) / 1e6 or embed["graph"]
    cores = _cores(runner_args)
    graph = stages.get("beam_graph", {}).get("seconds", wall)
    return {"rows": rows, "output_root": str(cfg.output_root), "wall_seconds": round(wall, 1),
            "peak_rss_mb": round(_peak_mb()),
            "published": totals["published"], "totals": totals, "cpu_seconds": round(cpu, 1),
            "teacher_model_seconds": teacher_s, "demo_embed_seconds": round(demos_s, 2),
            "cores": cores,
            "overhead_ms_per_row_core": round((wall * cores - teacher_s - demos_s) / rows * 1e3, 3),
            "graph_overhead_ms_per_row_core": round((graph * cores - teacher_s - demos_s) / rows * 1e3, 3),
            "stages": stages, "gc": collections}


def _time_collections() -> dict:
    """The garbage collector's collections and their seconds, per generation (0 young, 2 full),
    from now on in this process (`gc.callbacks`)."""
    import gc

    spent = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]}
    started = [0.0]

    def callback(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
            return
        spent["collections"][info["generation"]] += 1
        spent["seconds"][info["generation"]] += time.perf_counter() - started[0]
    gc.callbacks.append(callback)
    return spent


def _cores(runner_args: list[str]) -> int:
    """The cores the graph can keep busy: 1 in process (one Python thread does the work, torch
    on 1 thread), else the worker processes (`--direct_num_workers`), at most the machine's."""
    workers = 1
    for a in runner_args:
        if a.startswith("--direct_num_workers="):
            workers = int(a.split("=", 1)[1]) or os.cpu_count() or 1
    return min(workers, os.cpu_count() or 1)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _time_embedder() -> dict:
    """Seconds spent in the demonstration embedder's calls in this process: all of them, and
    those made while the Beam graph ran (`graph`)."""
    import potstill.beam_pipelines.pipeline as pipeline
    from potstill.models.embed import Embedder

    spent, call, rounds = {"seconds": 0.0, "graph": 0.0, "in_graph": False}, Embedder.__call__, pipeline.run_rounds

    def timed(self, texts):
        start = time.perf_counter()
        try:
            return call(self, texts)
        finally:
            took = time.perf_counter() - start
            spent["seconds"] += took
            spent["graph"] += took if spent["in_graph"] else 0.0

    def graph(*args, **kwargs):
        spent["in_graph"] = True
        try:
            return rounds(*args, **kwargs)
        finally:
            spent["in_graph"] = False
    Embedder.__call__, pipeline.run_rounds = timed, graph
    return spent


def _teacher_counters() -> dict:
    """The teacher stage's Beam counters of every round (`demo_selection_micros`), caught where
    the driver reads the pipeline's counters."""
    from potstill.beam_pipelines import usage

    got, stage_counters = {}, usage.stage_counters

    def wrapper(result):
        for name, value in usage.beam_counters(result, "potstill_teacher").items():
            got[name] = got.get(name, 0) + value
        return stage_counters(result)
    usage.stage_counters = wrapper
    return got


def write_staged(staging: Path, rows: int, shard_rows: int = 50_000) -> None:
    """N scored rows (valid for the gate, confidences spread so curation filters some), 1% more
    filtered before the teacher and 1% rejected, in shards like the graph's writers make."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from potstill.publish import contract

    staging.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for start in range(0, rows, shard_rows):
        n = min(shard_rows, rows - start)
        conf = rng.uniform(0.5, 1.0, n).astype(np.float32)
        first = rng.integers(0, 2, n)
        probs = np.where(first[:, None] == 0, np.stack([conf, 1 - conf], 1), np.stack([1 - conf, conf], 1))
        labels = np.array(["negative", "positive"])[first]
        ent = -(conf * np.log(conf) + (1 - conf) * np.log(np.clip(1 - conf, 1e-9, 1)))
        ids = [f"{i:012x}" for i in range(start, start + n)]
        cols = {"id": ids, "text": [f"synthetic review {i} with some words in it" for i in range(start, start + n)],
                "label": labels, "label_probs": list(probs), "teacher_label": labels,
                "teacher_confidence": conf, "teacher_entropy": ent.astype(np.float32),
                "teacher_margin": (2 * conf - 1).astype(np.float32), "gold_label": [None] * n,
                "source": ["corpus"] * n, "weight": np.ones(n, np.float32)}
        table = pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in contract.SCORED_SCHEMA},
                         schema=contract.SCORED_SCHEMA)
        pq.write_table(table, staging / f"scored-r1-{start:09d}.parquet")
        pq.write_table(pa.table({"key": [f"k{i}" for i in range(start, start + n)]}),
                       staging / f"keys-r1-{start:09d}.parquet")
        extra = max(1, n // 100)
        dup = table.slice(0, extra).append_column("filter_reason", pa.array(["duplicate"] * extra))
        pq.write_table(dup.cast(contract.FILTERED_SCHEMA), staging / f"filtered-r1-{start:09d}.parquet")
        rej = pa.table({"source": ["corpus"] * extra, "input_ref": [f"u.parquet:{start + i}" for i in range(extra)],
                        "reason": ["empty_text"] * extra, "detail": [None] * extra, "raw": [None] * extra},
                       schema=contract.REJECTED_SCHEMA)
        pq.write_table(rej, staging / f"rejected-r1-{start:09d}.parquet")


def after_graph_child(rows: int, work: Path, chunk_rows: int | None = None) -> dict:
    """`job.finish` alone on staged shards written beforehand (by the parent); `chunk_rows`:
    the gate's validation.chunk_rows (None: the default)."""
    from types import SimpleNamespace

    import potstill.job as job
    from potstill.config.core import parse_config

    stages: dict[str, dict] = {}
    for stage in AFTER:
        _wrap(stages, *stage)
    staging = work / f"staged-{rows}"
    for left in [staging / "version", *staging.glob("curation.duckdb*")]:  # an earlier run's
        if left.is_dir():
            shutil.rmtree(left)
        elif left.exists():
            left.unlink()
    cfg = parse_config({"dataset": f"after-{rows}", "output_root": str(work / f"after-out-{time.time_ns()}"),
                        "task": {"labels": ["negative", "positive"]},
                        "corpus": {"unlabeled": {"path": str(work / "u.parquet")}},
                        "teacher": {"model": "tiny"}, "curation": {"min_confidence": 0.6},
                        "validation": {"chunk_rows": chunk_rows} if chunk_rows else {}})
    model = SimpleNamespace(name="tiny", source="synthetic", sha256="0" * 64)
    plan = job.Plan({"unlabeled": []}, "bench", f"bench-{time.time_ns()}", {"teacher": model})
    before = _rss_mb()
    start = time.perf_counter()
    version = job.finish(cfg, plan, staging, {})
    wall = time.perf_counter() - start
    manifest = json.loads((version / "manifest.json").read_text())
    return {"rows": rows, "wall_seconds": round(wall, 1), "rss_before_mb": round(before),
            "peak_rss_mb": round(_peak_mb()), "published": manifest["counts"]["totals"]["published"],
            "stages": stages}


def _wrap(stages: dict, name: str, module: str, attr: str) -> None:
    """Time one function the driver calls (replaced on its module), and the memory after it."""
    import importlib

    mod = importlib.import_module(module)
    fn = getattr(mod, attr, None)
    if fn is None:  # an older checkout (--code) without this stage
        return

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stages[name] = {"seconds": round(time.perf_counter() - start, 2),
                            "rss_mb": round(_rss_mb()), "peak_rss_mb": round(_peak_mb())}
    setattr(mod, attr, wrapper)


def _run_child(args, work: Path, rows: int, code: str, output_root: str | None = None) -> dict:
    # --code's potstill first; this checkout's benchmarks next (an older checkout has no
    # benchmarks package); run from --work, so that the current folder shadows neither
    path = [code, str(ROOT), os.environ.get("PYTHONPATH", "")]
    out = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--child", "--rows", str(rows),
                          "--work", str(work), "--threads", str(args.threads),
                          "--runner-args", args.runner_args]
                         + (["--output-root", output_root] if output_root else [])
                         + [f"--set={s}" for s in args.set]
                         + (["--after-graph"] if args.after_graph else [])
                         + (["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else []),
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))},
                         cwd=work, capture_output=True, text=True)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"the run with {rows} rows ({code}) failed:\n{out.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def _median(code: str, runs: list[dict]) -> dict:
    """One row of the table: the median run by wall time (its own figures, so they add up),
    with every run's wall time."""
    runs = sorted(runs, key=lambda r: r["wall_seconds"])
    return {**runs[(len(runs) - 1) // 2], "code": code, "runs": len(runs),
            "walls": " / ".join(str(r["wall_seconds"]) for r in runs)}


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("scale", __doc__, work="runs/scale", threads=1, tiny={"rows": [40]})
    ap = bench.parser
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--runner-args", default="")
    ap.add_argument("--after-graph", action="store_true", help="time job.finish alone (docstring)")
    ap.add_argument("--chunk-rows", type=int, help="validation.chunk_rows (--after-graph)")
    ap.add_argument("--code", nargs="+", default=[str(ROOT)],
                    help="where the potstill that runs is (an unpacked wheel, or a checkout whose "
                    "potstill imports); several: each size runs once per place in turn, --repeats "
                    "times, and the table gives each place's medians")
    ap.add_argument("--repeats", type=int, default=1, help="runs per size and place (medians)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="a config setting of the job, e.g. audit.search.few_shot_k=[0] (repeatable)")
    ap.add_argument("--rerun", action="store_true",
                    help="after each run, the same job again on its output root: every row answered "
                    "by the teacher store (more than teacher.store_lookup_answers answers: the store is joined by key)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--output-root", help=argparse.SUPPRESS)
    args = bench.parse(argv)
    work = bench.work()
    if args.child:
        result = after_graph_child(args.rows[0], work, args.chunk_rows) if args.after_graph else \
            child(args.rows[0], work, args.threads, args.runner_args.split(), args.set, args.output_root)
        print("RESULT " + json.dumps(result))
        return 0
    results = []
    for rows in args.rows:
        if args.after_graph and not (work / f"staged-{rows}").is_dir():
            write_staged(work / f"staged-{rows}", rows)
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats):
            for code in args.code:  # alternating, so that a change in the machine's load hits both
                runs.setdefault(code, []).append(_run_child(args, work, rows, code))
                bench.progress({"code": code, **runs[code][-1]})
                if args.rerun:
                    root = runs[code][-1]["output_root"]
                    runs.setdefault(f"{code} (rerun)", []).append(_run_child(args, work, rows, code, root))
                    bench.progress({"code": f"{code} (rerun)", **runs[f"{code} (rerun)"][-1]})
        results += [_median(code, got) for code, got in runs.items()]
    stages = [s[0] for s in (AFTER if args.after_graph else STAGES)]

    def stage(name):
        return lambda r: (f"{r['stages'][name]['seconds']} ({r['stages'][name]['rss_mb']})"
                          if name in r["stages"] else "-")
    overhead = {} if args.after_graph else {
        "teacher model s": "teacher_model_seconds", "demo embedder s": "demo_embed_seconds",
        "cores": "cores", "overhead ms/row/core": "overhead_ms_per_row_core",
        "graph overhead ms/row/core": "graph_overhead_ms_per_row_core",
        "gc collections 0/1/2 (s)": lambda r: " / ".join(
            f"{n} ({t:.2f})" for n, t in zip(r["gc"]["collections"], r["gc"]["seconds"]))
        if "gc" in r else "-"}
    where = {"code": lambda r: Path(r["code"]).name, "walls (s)": "walls"} \
        if len(args.code) > 1 or args.rerun else {}
    return bench.report(results, {**where, "rows": "rows:,", "peak RSS (MB)": "peak_rss_mb:,", "wall (s)": "wall_seconds",
                                  **overhead, **{f"{n} s (RSS MB)": stage(n) for n in stages}},
                        title="after the Beam graph (job.finish)" if args.after_graph else "the whole job")


if __name__ == "__main__":
    sys.exit(main())
