"""Which backend serves a model role: transformers (`hf`) or vLLM (`vllm`), chosen in one place.

models/teacher.py and models/generate.py hold the transformers backends, models/vllm_backend.py
the vLLM ones; this module is the only one that imports both, so neither imports the other.
"""
from __future__ import annotations

from models.generate import Generator, HFGenerator
from models.teacher import HFTeacher, TeacherBase


def load_scorer(model_path: str, labels: list[str], instruction: str | None, backend: str = "hf",
                engine=None, **kwargs) -> TeacherBase:
    """The label scorer: `HFTeacher`, or `VLLMTeacher` (`engine` = the `teacher.vllm` settings).
    `kwargs`: prompt style, verbalizers, batch size, token limits, dtype, threads."""
    if backend == "vllm":
        from models.vllm_backend import VLLMTeacher

        return VLLMTeacher(model_path, labels, instruction, engine=engine, **kwargs)
    return HFTeacher(model_path, labels, instruction, **kwargs)


def load_generator(model_path: str, backend: str = "hf", engine=None, **kwargs) -> Generator:
    """The generation backend: `HFGenerator`, or `VLLMGenerator` (`engine` = the `teacher.vllm`
    settings). `kwargs`: dtype, threads, max_prompt_tokens."""
    if backend == "vllm":
        from models.vllm_backend import VLLMGenerator

        return VLLMGenerator(model_path, engine=engine, **kwargs)
    return HFGenerator(model_path, **kwargs)
