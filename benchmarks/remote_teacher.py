"""Teacher label scoring through an OpenAI-compatible server vs in process: rows/second of
`backend: openai` (a local `vllm serve`, exact scoring) at several max_concurrency values, the
in-process vLLM backend and the HF backend, on the same rows, in one run.

    python benchmarks/remote_teacher.py [--model smollm2-135m-instruct] [--rows 200]
        [--concurrency 1 8 32] [--batch 32] [--threads 1] [--base-url URL --served-name NAME]

Rows are Rotten Tomatoes reviews (potstill.beam_pipelines.demo_data). Every teacher gets the same
prompt, labels and rows in batches of --batch rows (what the handler gets per call), after one
untimed warm-up batch (load and start-up excluded). Without --base-url the script starts
`vllm serve` itself (models/teacher/vllm_server.py) after the in-process teachers are done, pinned to
--threads cores like them (VLLM_CPU_OMP_THREADS_BIND), with its prefix cache emptied before
every pass (VLLM_SERVER_DEV_MODE's /reset_prefix_cache): a pipeline scores each row once.
It prints rows/s, the ratio to HF, label agreement with HF and the largest probability gap.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.backends import INSTRUCTION, LABELS, rt_rows  # noqa: E402
from potstill.models.registry import resolve_model  # noqa: E402
from potstill.models.teacher.hf import HFTeacher, normalise  # noqa: E402


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="packaged name or HF folder")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32, help="rows per score_labels call")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=1, help="cores per teacher (and the server)")
    parser.add_argument("--base-url", default=None, help="an already running server (else one is started)")
    parser.add_argument("--served-name", default="teacher")
    parser.add_argument("--skip-in-process", action="store_true", help="only the remote passes")
    args = parser.parse_args(argv)

    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("potstill.models.teacher.remote_http").setLevel(logging.INFO)  # every retry, with its cause
    torch.set_num_threads(args.threads)
    path = resolve_model(args.model).path
    texts = rt_rows(args.rows, None)
    results = []
    hf = HFTeacher(path, LABELS, INSTRUCTION, threads=args.threads)
    out, seconds = timed(hf, texts, args.batch)
    results.append(("hf (in process)", out, seconds, {}))
    if not args.skip_in_process:
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

    p_hf = normalise(results[0][1])
    print(f"\n{len(texts)} rows, {args.model}, {args.threads} thread(s)/core(s) per teacher, batch {args.batch}")
    print(f"{'teacher':34s} {'rows/s':>8s} {'x hf':>6s} {'agree':>6s} {'max|dp|':>9s}  http")
    for name, out, seconds, usage in results:
        p = normalise(out)
        rate = len(texts) / seconds
        print(f"{name:34s} {rate:8.1f} {rate / (len(texts) / results[0][2]):6.2f} "
              f"{(p.argmax(1) == p_hf.argmax(1)).mean():6.1%} {np.abs(p - p_hf).max():9.1e}  "
              f"{json.dumps(usage) if usage else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
