"""vLLM backends: the teacher's label scoring and the generation stage's sampling, each on one
`vllm.LLM` built once per worker (`teacher.backend: vllm`, settings in `teacher.vllm`).

Scoring computes what HFTeacher computes: log P(answer | prompt), summed over the answer's
tokens (chain rule), for every candidate answer. Prompts are encoded by the shared
`TeacherBase` code and sent as token ids (`TokensPrompt`), so vLLM reads exactly the tokens the
HF backend scores. Every request asks for one new token with `logprob_token_ids`: vLLM then
returns the log-softmax of the raw logits at the answer position (its default `raw_logprobs`
mode) for exactly those ids. One request per row and per node of the candidates' token trie:
the row's prompt gives every candidate's first token; prompt + the first j tokens of a
multi-token candidate gives its token j+1 (candidates sharing a start share the request).
Why not prompt log-probs (`prompt_logprobs`)? vLLM does not read the prefix cache for such
requests, so the shared instruction would be recomputed for every row and candidate. The
trie's deeper requests are sent after the rows' own, so they find the row in the prefix cache.
Automatic prefix caching is on; it reuses whole KV blocks only (`teacher.vllm.block_size`).

Processes. By default (`in_process: true`) the engine runs inside the calling process
(VLLM_ENABLE_V1_MULTIPROCESSING=0): vLLM spawns nothing, so nothing can outlive the worker and
no `if __name__ == "__main__"` guard is needed. With `in_process: false` vLLM runs its engine
core in a spawned process (more overlap on a GPU; the launching script needs the guard), and
with `tensor_parallel_size > 1` it spawns one worker per GPU in either mode. Those processes
are stopped by `close()`, by a finalizer when the object is collected, or at interpreter exit.

Building an engine in-process changes process-wide state: vLLM replaces `torch.set_num_threads`
with a no-op and adds its tcmalloc/libgomp to LD_PRELOAD for processes started later (both
undone here), and seeds the global Python, numpy and torch RNGs with the engine seed (left).
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Sequence

import numpy as np

from potstill.models.generation.generate import Generation, Sampling, prompt_seed, render_prompt
from potstill.models.teacher.hf import TeacherBase

if TYPE_CHECKING:
    from potstill.config.core import VLLMEngine

log = logging.getLogger(__name__)
MAX_IDS_PER_REQUEST = 128  # vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS
_BUILD_LOCK = threading.Lock()  # building an engine changes process-wide state
_OPEN: "weakref.WeakSet[_Engine]" = weakref.WeakSet()


def _import_vllm() -> None:
    """Import vLLM in a thread of its own. Without torchcodec, vLLM keeps the ImportError it
    caught at import time, and that traceback pins every frame above the import: imported
    from the caller's stack, that would keep the caller's objects (the engine) alive forever."""
    if "vllm.entrypoints.llm" in sys.modules:
        return
    failed: list[BaseException] = []

    def run():
        try:
            import vllm.entrypoints.llm  # noqa: F401  what `vllm.LLM` loads lazily
            import vllm.inputs  # noqa: F401
        except BaseException as err:  # re-raised in the caller
            failed.append(err)

    thread = threading.Thread(target=run, name="import-vllm")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _engine_options(engine: "VLLMEngine | None") -> "VLLMEngine":
    if engine is None:
        from potstill.config.core import VLLMEngine

        engine = VLLMEngine()
    return engine


def build_engine(model_path: str, engine: "VLLMEngine | None" = None, *, dtype: str = "float32",
                 threads: int | None = None, seed: int = 0):
    """One `vllm.LLM` with automatic prefix caching, configured from `teacher.vllm`."""
    import torch

    opts = _engine_options(engine)
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        log.warning("VLLM_CPU_KVCACHE_SPACE=%s is set: vLLM uses it instead of teacher.vllm.kv_cache_gb",
                    os.environ["VLLM_CPU_KVCACHE_SPACE"])
    _import_vllm()
    with _BUILD_LOCK:
        import vllm
        from vllm.platforms import current_platform

        if hasattr(vllm.envs, "disable_envs_cache"):
            vllm.envs.disable_envs_cache()  # an earlier engine froze the environment it saw
        on_cpu = current_platform.is_cpu()
        kwargs = dict(tokenizer=model_path, dtype=opts.dtype or dtype, seed=seed,
                      enable_prefix_caching=True, max_model_len=opts.max_model_len,
                      tensor_parallel_size=opts.tensor_parallel_size,
                      gpu_memory_utilization=opts.gpu_memory_utilization,
                      enforce_eager=on_cpu if opts.enforce_eager is None else opts.enforce_eager)
        # vLLM's own CPU default is a share of all RAM (gpu_memory_utilization), too much on a
        # shared machine: 1 GiB holds ~20k tokens of a 0.5B model in float32.
        kv_cache_gb = opts.kv_cache_gb or (1.0 if on_cpu else None)
        if kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
        # On a CPU vLLM's default block is 128 tokens: a shorter shared prefix is never cached,
        # and short rows waste most of a block (benchmarks/backends.py: 32 was 1.6x faster).
        block_size = opts.block_size or (32 if on_cpu else None)
        if block_size is not None:
            kwargs["block_size"] = block_size
        kwargs.update(opts.engine_args)
        saved = {k: os.environ.get(k) for k in ("LD_PRELOAD", "VLLM_ENABLE_V1_MULTIPROCESSING")}
        set_threads = torch.set_num_threads
        if on_cpu and opts.in_process:
            set_threads(threads or os.cpu_count() or 1)  # vLLM binds no threads in-process
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if opts.in_process else "1"
        start = time.perf_counter()
        try:
            llm = vllm.LLM(model_path, **kwargs)
        finally:
            torch.set_num_threads = set_threads
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    log.info("vLLM engine for %s ready in %.1fs (%s, in_process=%s)", model_path,
             time.perf_counter() - start, kwargs["dtype"], opts.in_process)
    return llm


def shutdown_engine(llm) -> None:
    """Stop the engine's processes (if any) and free what it holds; safe to call twice."""
    client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if client is not None:
        client.shutdown()
    gc.collect()


class _Engine:
    """Owns one engine: built on creation, shut down by `close()`, when collected, or at exit."""

    def __init__(self, model_path: str, engine: "VLLMEngine | None", dtype: str,
                 threads: int | None, seed: int = 0):
        self.llm = build_engine(model_path, engine, dtype=dtype, threads=threads, seed=seed)
        self._lock = threading.Lock()  # one generate call at a time: vllm.LLM is not thread-safe
        self._finalizer = weakref.finalize(self, shutdown_engine, self.llm)
        _OPEN.add(self)

    def generate(self, prompts, params):
        with self._lock:
            if self.llm is None:
                raise RuntimeError("the vLLM engine was closed")
            return self.llm.generate(prompts, params, use_tqdm=False)

    def reset_prefix_cache(self) -> None:
        """Forget every cached prompt block (benchmarks: a pipeline never scores a row twice)."""
        with self._lock:
            self.llm.reset_prefix_cache()

    @property
    def closed(self) -> bool:
        return self.llm is None

    def close(self) -> None:
        with self._lock:
            self.llm = None
            self._finalizer()
            _OPEN.discard(self)



@contextlib.contextmanager
def closing_new_engines():
    """Close the engines built inside the block when it ends: a Beam runner that runs in this
    process keeps its loaded models (and their engines) alive after the pipeline."""
    before = set(_OPEN)
    try:
        yield
    finally:
        for engine in set(_OPEN) - before:
            engine.close()


class VLLMTeacher(TeacherBase):
    """vLLM backend with HFTeacher's interface; the same prompt, tokens and scores."""

    def __init__(self, model_path: str, labels: list[str], instruction: str | None = None, *,
                 style: str = "labels", verbalizers=None, batch_size: int = 8,
                 max_input_tokens: int = 512, demo_max_tokens: int = 128, dtype: str = "float32",
                 threads: int | None = None, engine: "VLLMEngine | None" = None):
        super().__init__(model_path, labels, instruction, style=style, verbalizers=verbalizers,
                         max_input_tokens=max_input_tokens, demo_max_tokens=demo_max_tokens)
        self.batch_size = batch_size  # vLLM schedules its own batches; kept for the interface
        self.max_model_len = _engine_options(engine).max_model_len
        self.engine = _Engine(model_path, engine, dtype, threads)

    def _set_prompt(self, style, verbalizers) -> None:
        super()._set_prompt(style, verbalizers)
        self._trie = self.trie  # TeacherBase's candidate token trie
        self._longest = max(len(ids) for ids in self.cand_ids)

    def _requests(self, depth_zero: bool):
        """(answer prefix, token ids to score) per request, at most 128 ids each."""
        for prefix, uses in self._trie.items():
            if (len(prefix) == 0) == depth_zero:
                ids = sorted({tok for _, tok in uses})
                for start in range(0, len(ids), MAX_IDS_PER_REQUEST):
                    yield prefix, ids[start:start + MAX_IDS_PER_REQUEST]

    def score_encoded(self, encoded) -> np.ndarray:
        """Log P(answer | prompt) for every encoded prompt and surface form: [n, C]."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [self.prompt_ids(e) for e in encoded]
        too_long = [len(p) + self._longest for p in prompts if len(p) + self._longest > self.max_model_len]
        if too_long:
            raise ValueError(f"a prompt needs {max(too_long)} tokens > teacher.vllm.max_model_len="
                             f"{self.max_model_len}: raise it or lower max_input_tokens / few_shot")
        out = np.zeros((len(prompts), len(self.cand_ids)), dtype=np.float64)
        for depth_zero in (True, False):  # rows first, so the trie's requests hit their cache
            reqs = [(row, prefix, ids) for row in range(len(prompts))
                    for prefix, ids in self._requests(depth_zero)]
            if not reqs:
                continue
            results = self.engine.generate(
                [TokensPrompt(prompt_token_ids=prompts[row] + list(prefix)) for row, prefix, _ in reqs],
                [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids,
                                detokenize=False) for _, _, ids in reqs])
            for (row, prefix, ids), result in zip(reqs, results):
                logprobs = result.outputs[0].logprobs[0]
                wanted = set(ids)
                for c, tok in self._trie[prefix]:
                    if tok in wanted:
                        out[row, c] += logprobs[tok].logprob
        return out

    def close(self) -> None:
        self.engine.close()


class VLLMGenerator:
    """The generation stage on vLLM: the same chat rendering, prompt truncation, end-of-text
    handling and decoding as HFGenerator; sampling seeded per prompt (see `prompt_seed`), so
    a prompt's outputs do not depend on the others in its batch."""

    def __init__(self, model_path: str, *, dtype: str = "float32", threads: int | None = None,
                 max_prompt_tokens: int = 2048, engine: "VLLMEngine | None" = None):
        from transformers import AutoTokenizer, GenerationConfig

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.max_prompt_tokens = max_prompt_tokens
        try:
            eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        except OSError:  # no generation_config.json
            eos = None
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {e for e in eos + [self.tokenizer.eos_token_id] if e is not None}
        self.engine = _Engine(model_path, engine, dtype, threads)

    def generate(self, conversations: Sequence[list[dict]], sampling: Sampling) -> list[list[Generation]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [render_prompt(self.tokenizer, c) for c in conversations]
        enc = self.tokenizer(prompts, add_special_tokens=False, truncation=True,
                             max_length=self.max_prompt_tokens)["input_ids"]
        params = [SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                 max_tokens=sampling.max_new_tokens, seed=prompt_seed(sampling.seed, i),
                                 detokenize=False) for i in range(len(prompts))]
        results = self.engine.generate([TokensPrompt(prompt_token_ids=ids) for ids in enc], params)
        out = []
        for result in results:
            gens = []
            for completion in sorted(result.outputs, key=lambda c: c.index):
                ids = list(completion.token_ids)
                stop = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
                kept = ids if stop is None else ids[:stop]
                gens.append(Generation(self.tokenizer.decode(kept, skip_special_tokens=True),
                                       stop is None and completion.finish_reason == "length"))
            out.append(gens)
        return out

    def close(self) -> None:
        self.engine.close()
