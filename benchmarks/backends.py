"""Teacher label scoring, HF vs vLLM, on the same rows in one process: rows/second and the ratio.

    python -m benchmarks.backends [--model smollm2-135m-instruct] [--rows 200] [--repeats 3]
        [--batch 32] [--dtype float32] [--threads N] [--block-sizes 32 128] [--corpus DIR]
        [--out results.json] [--tiny]

Rows are Rotten Tomatoes reviews (potstill.beam_pipelines.demo_data; or --corpus, a folder with
unlabeled.parquet). Both teachers get the same prompt, labels and rows, fed in batches of
--batch rows (what RunInference hands the handler: teacher.batch_size x 4 by default); one
vLLM teacher per --block-sizes value (the prefix cache's granularity; default: the config's).
Each repeat times every teacher back to back, so machine noise hits them alike; the figures
are medians over the repeats, after one untimed warm-up batch each (model load excluded).
vLLM's prefix cache is emptied before every pass: a pipeline scores each row once, so only
the shared prompt prefix may come from the cache, as it does for HF. It also prints how many
labels agree with HF's and the largest probability difference. `--block-sizes` with no value:
HF alone (what --tiny runs: vLLM's CPU attention refuses the tiny Llama's 8-wide heads).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks.harness import Benchmark
from potstill.models.registry import resolve_model
from potstill.models.teacher.hf import HFTeacher, normalise

LABELS = ["negative", "positive"]
INSTRUCTION = "Is the sentiment of this movie review negative or positive?"


def rt_rows(n: int, corpus: str | None) -> list[str]:
    if corpus is None:
        from potstill.beam_pipelines.demo_data import main

        corpus = tempfile.mkdtemp(prefix="potstill-bench-")
        main(["--out", corpus, "--seed-size", "2", "--unlabeled-size", str(n), "--test-size", "2"])
    return pq.read_table(Path(corpus) / "unlabeled.parquet")["text"].to_pylist()[:n]


def score_all(teacher, texts: list[str], batch: int) -> tuple[np.ndarray, float]:
    if hasattr(teacher, "engine"):  # vLLM: rows from the previous pass would hit its prefix cache
        teacher.engine.reset_prefix_cache()
    start = time.perf_counter()
    out = np.vstack([teacher.score_labels(texts[i:i + batch]) for i in range(0, len(texts), batch)])
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("backends", __doc__, repeats=3, threads=None, tiny={
        "model": lambda ws: ws.teacher, "corpus": lambda ws: str(ws.data), "rows": 8, "repeats": 1,
        "batch": 4, "block_sizes": []})
    parser = bench.parser
    parser.add_argument("--model", default="smollm2-135m-instruct", help="packaged name or HF folder")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32, help="rows per score_labels call")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--block-sizes", type=int, nargs="*", default=[None],
                        help="vLLM KV block sizes, one vLLM teacher each (none: HF only)")
    parser.add_argument("--max-input-tokens", type=int, default=512)
    parser.add_argument("--corpus", default=None, help="folder with unlabeled.parquet")
    args = bench.parse(argv)

    path = resolve_model(args.model).path
    texts = rt_rows(args.rows, args.corpus)
    common = dict(max_input_tokens=args.max_input_tokens, dtype=args.dtype, threads=args.threads)
    teachers = {"hf": HFTeacher(path, LABELS, INSTRUCTION, batch_size=8, **common)}
    for size in args.block_sizes:
        from potstill.config.core import VLLMEngine
        from potstill.models.teacher.vllm_backend import VLLMTeacher

        name = "vllm" if size is None else f"vllm, block {size}"
        teachers[name] = VLLMTeacher(path, LABELS, INSTRUCTION, engine=VLLMEngine(block_size=size),
                                     **common)
    tokens = sum(len(teachers["hf"].prompt_ids(teachers["hf"].encode(t))) for t in texts)
    probs, rates = {}, {name: [] for name in teachers}
    for name, teacher in teachers.items():  # warm-up: first-call allocations, lazy kernels
        score_all(teacher, texts[: args.batch], args.batch)
    for rep in range(args.repeats):
        for name, teacher in teachers.items():
            logp, seconds = score_all(teacher, texts, args.batch)
            probs[name] = normalise(logp)
            rates[name].append(len(texts) / seconds)
            bench.progress({"repeat": rep + 1, "backend": name, "rows_per_s": len(texts) / seconds})
    for teacher in teachers.values():
        teacher.close()

    hf = statistics.median(rates["hf"])
    rows = [{"backend": name, "rows_per_s": statistics.median(rates[name]), "min": min(rates[name]),
             "max": max(rates[name]),
             "prompt_tokens_per_s": statistics.median(rates[name]) * tokens / len(texts),
             "x_hf": statistics.median(rates[name]) / hf,
             "labels_equal_hf": float((probs["hf"].argmax(1) == probs[name].argmax(1)).mean()),
             "max_abs_dp": float(np.abs(probs["hf"] - probs[name]).max()), "rates": rates[name]}
            for name in teachers]
    return bench.report(rows, {
        "backend": "backend", "rows/s (median)": "rows_per_s:.2f", "min": "min:.2f", "max": "max:.2f",
        "prompt tokens/s": "prompt_tokens_per_s:.0f", "x hf": "x_hf:.2f",
        "labels = hf": "labels_equal_hf:.1%", "max abs dp": "max_abs_dp:.1e"},
        title=f"model {args.model} ({args.dtype}), {len(texts)} rows, {tokens / len(texts):.0f} prompt "
              f"tokens/row, batches of {args.batch}, medians of {args.repeats} repeats",
        rows_scored=len(texts), prompt_tokens_per_row=tokens / len(texts))


if __name__ == "__main__":
    sys.exit(main())
