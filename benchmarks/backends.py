"""Teacher label scoring, HF vs vLLM, on the same rows in one process: rows/second and the ratio.

    python benchmarks/backends.py [--model smollm2-135m-instruct] [--rows 200] [--repeats 3]
        [--batch 32] [--dtype float32] [--threads N] [--block-sizes 32 128] [--corpus DIR]

Rows are Rotten Tomatoes reviews (potstill.beam_pipelines.demo_data; or --corpus, a folder with
unlabeled.parquet). Both teachers get the same prompt, labels and rows, fed in batches of
--batch rows (what RunInference hands the handler: teacher.batch_size x 4 by default); one
vLLM teacher per --block-sizes value (the prefix cache's granularity; default: the config's).
Each repeat times every teacher back to back, so machine noise hits them alike; the figures
are medians over the repeats, after one untimed warm-up batch each (model load excluded).
vLLM's prefix cache is emptied before every pass: a pipeline scores each row once, so only
the shared prompt prefix may come from the cache, as it does for HF. It also prints how many
labels agree with HF's and the largest probability difference.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="packaged name or HF folder")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="rows per score_labels call")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[None],
                        help="vLLM KV block sizes, one vLLM teacher each")
    parser.add_argument("--max-input-tokens", type=int, default=512)
    parser.add_argument("--corpus", default=None, help="folder with unlabeled.parquet")
    args = parser.parse_args(argv)

    from potstill.models.teacher.vllm_backend import VLLMTeacher
    from potstill.config.core import VLLMEngine

    path = resolve_model(args.model).path
    texts = rt_rows(args.rows, args.corpus)
    common = dict(max_input_tokens=args.max_input_tokens, dtype=args.dtype, threads=args.threads)
    teachers = {"hf": HFTeacher(path, LABELS, INSTRUCTION, batch_size=8, **common)}
    for size in args.block_sizes:
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
            print(f"repeat {rep + 1}: {name:16s} {len(texts) / seconds:8.2f} rows/s", file=sys.stderr)
    for teacher in teachers.values():
        teacher.close()

    print(f"model {args.model} ({args.dtype}), {len(texts)} rows, {tokens / len(texts):.0f} prompt "
          f"tokens/row, batches of {args.batch}, medians of {args.repeats} repeats")
    print("| backend | rows/s (median) | min | max | prompt tokens/s | x hf | labels = hf | max abs dp |")
    print("|---|---|---|---|---|---|---|---|")
    hf = statistics.median(rates["hf"])
    for name in teachers:
        med = statistics.median(rates[name])
        agree = (probs["hf"].argmax(1) == probs[name].argmax(1)).mean()
        print(f"| {name} | {med:.2f} | {min(rates[name]):.2f} | {max(rates[name]):.2f} | "
              f"{med * tokens / len(texts):.0f} | {med / hf:.2f} | {agree:.1%} | "
              f"{np.abs(probs['hf'] - probs[name]).max():.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
