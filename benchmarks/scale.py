"""Memory and time at scale: the whole job on a synthetic corpus of N rows with a tiny random
teacher; peak RSS of the run and wall time (and RSS) per stage.

    python benchmarks/scale.py --rows 10000 100000 1000000 [--work runs/scale] [--threads 1]
        [--runner-args "--direct_num_workers=2 --direct_running_mode=multi_processing"]

Each size runs in a fresh child process (so one size's memory cannot leak into the next), on
the default in-process DirectRunner unless --runner-args says otherwise. The corpus is unique
short synthetic reviews in one Parquet file, 20 gold seed rows; the teacher is the tests' tiny
random Llama (tests/tiny_models.py, saved once as a local HF folder under --work), torch
threads 1. The stages are timed by wrapping the functions the driver calls (plan, audit, the
Beam graph, prepare_version = DuckDB curation + streamed files, validate_file = the GE gate in
chunks, publish = move in + card + report); `peak_rss_mb` is the child's maximum resident set
(getrusage) once the stage has ended, `rss_mb` its resident set then. Beam worker processes
(multi-process runners) are not in the child's figure.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = (("plan", "potstill.job", "plan"), ("audit", "beam_pipelines.pipeline", "audit_teacher"),
          ("beam_graph", "beam_pipelines.pipeline", "run_rounds"),
          ("curate_and_write", "potstill.job", "prepare_version"),
          ("validate", "potstill.expectations", "validate_file"),
          ("publish_and_report", "potstill.versions", "publish"))
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


def child(rows: int, work: Path, threads: int, runner_args: list[str]) -> dict:
    """One run, in this (fresh) process: per-stage seconds and memory."""
    import importlib

    sys.path.insert(0, str(ROOT / "tests"))
    import torch

    torch.set_num_threads(threads)
    from tiny_models import build_tiny_lm

    model = work / "tiny-lm"
    if not (model / "config.json").exists():
        build_tiny_lm(model)
    unl, seed = write_corpus(work / "corpus", rows)
    stages: dict[str, dict] = {}

    def timed(name, module, attr):
        mod = importlib.import_module(module)
        fn = getattr(mod, attr)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                stages[name] = {"seconds": round(time.perf_counter() - start, 2),
                                "rss_mb": round(_rss_mb()), "peak_rss_mb": round(_peak_mb())}
        setattr(mod, attr, wrapper)

    for stage in STAGES:
        timed(*stage)
    from beam_pipelines.pipeline import run
    from potstill.config import parse_config

    cfg = parse_config({
        "dataset": f"scale-{rows}", "output_root": str(work / f"out-{rows}-{time.time_ns()}"),
        "task": {"labels": ["negative", "positive"]},
        "corpus": {"unlabeled": {"path": unl}, "seed": {"path": seed, "label_field": "label"}},
        "teacher": {"model": str(model), "batch_size": 64, "threads": threads}})
    start = time.perf_counter()
    version = run(cfg, runner_args)
    wall = time.perf_counter() - start
    manifest = json.loads((version / "manifest.json").read_text())
    return {"rows": rows, "wall_seconds": round(wall, 1), "peak_rss_mb": round(_peak_mb()),
            "published": manifest["counts"]["totals"]["published"], "stages": stages}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--work", default="runs/scale")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runner-args", default="")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    if args.child:
        print("RESULT " + json.dumps(child(args.rows[0], work, args.threads, args.runner_args.split())))
        return
    results = []
    for rows in args.rows:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        out = subprocess.run([sys.executable, __file__, "--child", "--rows", str(rows), "--work", str(work),
                              "--threads", str(args.threads), "--runner-args", args.runner_args],
                             env=env, capture_output=True, text=True)
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"the run with {rows} rows failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(line[len("RESULT "):]))
        print(json.dumps(results[-1]), flush=True)
    print_table(results)


def print_table(results: list[dict]) -> None:
    names = [s[0] for s in STAGES]
    print("\n| rows | peak RSS (MB) | wall (s) | " + " | ".join(f"{n} s (RSS MB)" for n in names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in results:
        cells = [f"{r['stages'][n]['seconds']} ({r['stages'][n]['rss_mb']})" if n in r["stages"] else "-"
                 for n in names]
        print(f"| {r['rows']:,} | {r['peak_rss_mb']:,} | {r['wall_seconds']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
