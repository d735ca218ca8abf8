"""Teacher label scoring through an OpenAI-compatible server vs in process: rows/second of
`backend: openai` (a local `vllm serve`, exact scoring) at several max_concurrency values, the
in-process vLLM backend and the HF backend, on the same rows, in one run.

    python -m benchmarks.remote_teacher [--model smollm2-135m-instruct] [--rows 200]
        [--concurrency 1 8 32] [--batch 32] [--threads 1] [--base-url URL --served-name NAME]
        [--skip-vllm] [--out results.json] [--tiny --base-url URL]

Rows are Rotten Tomatoes reviews (potstill.beam_pipelines.demo_data). Every teacher gets the same
prompt, labels and rows in batches of --batch rows (what the handler gets per call), after one
untimed warm-up batch (load and start-up excluded). Without --base-url the script starts
`vllm serve` itself (models/teacher/vllm_server.py) after the in-process teachers are done, pinned to
--threads cores like them (VLLM_CPU_OMP_THREADS_BIND), with its prefix cache emptied before
every pass (VLLM_SERVER_DEV_MODE's /reset_prefix_cache): a pipeline scores each row once.
It prints rows/s, the ratio to HF, label agreement with HF and the largest probability gap.
`--tiny` scores the synthetic corpus with the tiny Llama and skips vLLM (its CPU attention
refuses the tiny model's 8-wide heads), so it needs --base-url: any OpenAI-compatible server
that scores exactly (the tests run one of their own).
"""
from __future__ import annotations

import json
import sys
import time
import urllib.request

import numpy as np

from benchmarks.backends import INSTRUCTION, LABELS, rt_rows
from benchmarks.harness import Benchmark
from potstill.models.registry import resolve_model
from potstill.models.teacher.hf import HFTeacher, normalise


def timed(teacher, texts: list[str], batch: int) -> tuple[np.ndarray, float]:
    teacher.score_labels(texts[:batch])  # warm-up, untimed
    if hasattr(teacher, "engine"):  # in-process vLLM: the warm-up rows would hit its cache
        teacher.engine.reset_prefix_cache()
    start = time.perf_counter()
    out = np.vstack([teacher.score_labels(texts[i:i + batch]) for i in range(0, len(texts), batch)])
    return out, time.perf_counter() - start


def reset_server_cache(base_url: str) -> None:
    root = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
    try:
        urllib.request.urlopen(urllib.request.Request(f"{root}/reset_prefix_cache", method="POST"), timeout=30)
    except OSError as err:
        print(f"  (could not reset the server's prefix cache: {err})", file=sys.stderr)


def remote_passes(path: str, base_url: str, served: str, texts, batch, concurrency, results):
    from potstill.models.teacher.remote import OpenAITeacher
    from potstill.config.core import Endpoint

    for c in concurrency:
        endpoint = Endpoint(base_url=base_url, model=served, scoring="exact", max_concurrency=c)
        teacher = OpenAITeacher(path, LABELS, INSTRUCTION, engine=endpoint)
        teacher.score_labels(texts[:batch])  # warm-up (connections, server graphs)
        reset_server_cache(base_url)
        teacher._memo.clear()
        teacher.take_usage()
        start = time.perf_counter()
        out = np.vstack([teacher.score_labels(texts[i:i + max(batch, c)])
                         for i in range(0, len(texts), max(batch, c))])
        seconds = time.perf_counter() - start
        usage = teacher.take_usage()
        teacher.close()
        results.append((f"openai c={c} ({teacher.endpoint.exact_method})", out, seconds, dict(usage)))


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("remote_teacher", __doc__, threads=1, tiny={
        "model": lambda ws: ws.teacher, "corpus": lambda ws: str(ws.data), "rows": 8, "batch": 4,
        "concurrency": [1, 4], "skip_vllm": True})
    parser = bench.parser
    parser.add_argument("--model", default="smollm2-135m-instruct", help="packaged name or HF folder")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32, help="rows per score_labels call")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--base-url", default=None, help="an already running server (else one is started)")
    parser.add_argument("--served-name", default="teacher")
    parser.add_argument("--skip-vllm", "--skip-in-process", action="store_true",
                        help="no in-process vLLM teacher (HF, the reference, always runs)")
    parser.add_argument("--corpus", default=None, help="folder with unlabeled.parquet")
    args = bench.parse(argv)
    if args.tiny and not args.base_url:
        parser.error("--tiny needs --base-url: vLLM cannot serve the tiny model")

    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("potstill.models.teacher.remote_http").setLevel(logging.INFO)  # every retry, with its cause
    torch.set_num_threads(args.threads)
    path = resolve_model(args.model).path
    texts = rt_rows(args.rows, args.corpus)
    results = []
    hf = HFTeacher(path, LABELS, INSTRUCTION, threads=args.threads)
    out, seconds = timed(hf, texts, args.batch)
    results.append(("hf (in process)", out, seconds, {}))
    if not args.skip_vllm:
        from potstill.models.teacher.vllm_backend import VLLMTeacher
        from potstill.config.core import VLLMEngine

        vl = VLLMTeacher(path, LABELS, INSTRUCTION, threads=args.threads, engine=VLLMEngine())
        out, seconds = timed(vl, texts, args.batch)
        vl.close()
        results.append(("vllm (in process)", out, seconds, {}))
    if args.base_url:
        remote_passes(path, args.base_url, args.served_name, texts, args.batch, args.concurrency, results)
    else:
        from potstill.models.teacher.vllm_server import LocalServer

        cores = ",".join(str(i) for i in range(args.threads))
        env = {"VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_OMP_THREADS_BIND": cores}
        with LocalServer(path, args.served_name, env=env) as server:
            remote_passes(path, server.base_url, args.served_name, texts, args.batch,
                          args.concurrency, results)

    p_hf, hf_rate = normalise(results[0][1]), len(texts) / results[0][2]
    rows = []
    for name, out, seconds, usage in results:
        p = normalise(out)
        rows.append({"teacher": name, "rows_per_s": len(texts) / seconds,
                     "x_hf": len(texts) / seconds / hf_rate,
                     "labels_equal_hf": float((p.argmax(1) == p_hf.argmax(1)).mean()),
                     "max_abs_dp": float(np.abs(p - p_hf).max()), "http": usage or None})
    return bench.report(rows, {
        "teacher": "teacher", "rows/s": "rows_per_s:.1f", "x hf": "x_hf:.2f", "agree": "labels_equal_hf:.1%",
        "max abs dp": "max_abs_dp:.1e", "http": lambda r: json.dumps(r["http"]) if r["http"] else ""},
        title=f"{len(texts)} rows, {args.model}, {args.threads} thread(s)/core(s) per teacher, "
              f"batch {args.batch}", rows_scored=len(texts))


if __name__ == "__main__":
    sys.exit(main())
