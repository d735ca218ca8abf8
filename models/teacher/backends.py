"""Which backend serves a model role: transformers (`hf`), vLLM (`vllm`) or an OpenAI-compatible
endpoint (`openai`), chosen in one place.

models/teacher/hf.py and models/generation/generate.py hold the transformers backends, models/teacher/vllm_backend.py
the vLLM ones, models/teacher/remote.py the remote ones; this module is the only one that imports them
all, so none imports another. `engine` is the backend's own settings: `teacher.vllm` for vllm,
`teacher.endpoint` for openai.
"""
from __future__ import annotations

from potstill.models.generation.generate import Generator, HFGenerator
from potstill.models.teacher.hf import HFTeacher, TeacherBase
from potstill.store import TeacherStore


def load_scorer(model_path: str, labels: list[str], instruction: str | None, backend: str = "hf",
                engine=None, **kwargs) -> TeacherBase:
    """The label scorer: `HFTeacher`, `VLLMTeacher` or `OpenAITeacher`. `kwargs`: prompt style,
    verbalizers, batch size, token limits, dtype, threads."""
    if backend == "openai":
        from potstill.models.teacher.remote import OpenAITeacher

        return OpenAITeacher(model_path, labels, instruction, engine=engine, **kwargs)
    if backend == "vllm":
        from potstill.models.teacher.vllm_backend import VLLMTeacher

        return VLLMTeacher(model_path, labels, instruction, engine=engine, **kwargs)
    return HFTeacher(model_path, labels, instruction, **kwargs)


def load_generator(model_path: str, backend: str = "hf", engine=None, **kwargs) -> Generator:
    """The generation backend: `HFGenerator`, `VLLMGenerator` or `OpenAIGenerator`. `kwargs`:
    dtype, threads, max_prompt_tokens."""
    if backend == "openai":
        from potstill.models.teacher.remote import OpenAIGenerator

        return OpenAIGenerator(model_path, engine=engine, **kwargs)
    if backend == "vllm":
        from potstill.models.teacher.vllm_backend import VLLMGenerator

        return VLLMGenerator(model_path, engine=engine, **kwargs)
    return HFGenerator(model_path, **kwargs)


def open_store(output_root: str, teacher, weights_sha256: str) -> TeacherStore:
    """The teacher store of the teacher the `teacher` settings describe: the one place a
    teacher's identity is built. In-process backends are keyed by the weights' SHA-256 and the
    dtype their scores are computed in (`teacher.vllm.dtype` on vLLM; int8: the scheme's tag,
    models/int8.py `SCHEME`, so another int8 scheme's answers are not reused); a remote one by
    the served model's name and the (resolved) scoring too, since the local folder only
    tokenizes and approximate answers are not exact ones."""
    return TeacherStore.open(output_root, answer_identity(teacher, weights_sha256), scoring_dtype(teacher))


def scoring_dtype(teacher) -> str:
    if teacher.backend == "vllm" and teacher.vllm.dtype:
        return teacher.vllm.dtype
    if teacher.dtype == "int8":
        from potstill.models.int8 import SCHEME

        return SCHEME
    return teacher.dtype


def answer_identity(teacher, model_sha256: str) -> str:
    """The store folder's identity (`open_store`): the weights' SHA-256 in process; a hash of
    the endpoint's model and scoring with it for a remote teacher."""
    if teacher.backend != "openai":
        return model_sha256
    import hashlib
    import json

    e = teacher.endpoint
    what = ["openai", e.model, e.scoring, e.top_logprobs if e.scoring == "top_logprobs" else None,
            model_sha256]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()
