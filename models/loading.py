"""Weights are loaded once per process, however many stages use them.

The audit (on the driver), the teacher stage, the saliency stage and the faithfulness test all
read the same teacher. Each asks `shared(key, load)` for it; the first call loads, later calls
get the same object. A local Beam runner runs every stage in one process, a remote runner's
worker runs several stages in one process: either way one load per process. The driver calls
`release()` when a run ends (objects with a `close()` are closed).

`LOADS` counts real loads per key (tests and logs read it). vLLM engines are not shared: each
owns processes and vLLM's process-wide distributed state, and an engine reused after another
in-process engine shut down fails ("pipeline model parallel group is not initialized"), so
the vLLM teacher and generator each build their own, as before.
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")
MAX_MODELS = 3  # teacher, TA, embedder; older ones are released (least recently used first)

LOADS: Counter = Counter()
_CACHE: "OrderedDict[Hashable, object]" = OrderedDict()
_LOCK = threading.RLock()


def shared(key: Hashable, load: Callable[[], T]) -> T:
    """The object loaded for `key` in this process, loading it on first use."""
    with _LOCK:
        if key in _CACHE and getattr(_CACHE[key], "closed", False):
            del _CACHE[key]  # closed by its user: load it again
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]  # type: ignore[return-value]
        obj = load()
        LOADS[key] += 1
        _CACHE[key] = obj
        while len(_CACHE) > MAX_MODELS:
            _close(_CACHE.popitem(last=False)[1])
        return obj


def release() -> None:
    """Forget (and close) every shared object; the next `shared` call loads again."""
    with _LOCK:
        while _CACHE:
            _close(_CACHE.popitem(last=False)[1])


def _close(obj: object) -> None:
    close = getattr(obj, "close", None)
    if callable(close):
        close()


def causal_lm(path: str, dtype: str = "float32"):
    """A transformers causal LM in eval mode, shared per (path, dtype). `int8`: loaded in float32,
    then the decoder's linear layers quantised (models/int8.py; the LM head stays float32)."""
    def load():
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32 if dtype == "int8" else getattr(torch, dtype)).eval()
        if dtype == "int8":
            from potstill.models.int8 import quantize_linear

            quantize_linear(model.base_model)
        return model
    return shared(("causal_lm", path, dtype), load)
