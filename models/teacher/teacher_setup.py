"""The teacher setup: everything that decides what the teacher says about a row, in one
immutable value built once by the driver and handed to every stage that needs the teacher
(label scoring, saliency, the faithfulness test) and, narrowed, to the teaching assistant.

    TeacherSetup.from_config(cfg, model_path, seeds)    the configured prompt and demonstrations
        .with_calibration(fitted)                      after the audit on the gold rows
        .load() -> LabelledTeacher                     in a worker: weights shared per process

`LabelledTeacher` is the loaded form: the backend (`HFTeacher` / `VLLMTeacher`), the
demonstration selector and the calibration, with the one function that turns the backend's raw
label log-probabilities into the calibrated distribution (`calibrate`), used by scoring,
attribution and the faithfulness test alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from potstill.models.teacher.backends import load_scorer
from potstill.models.teacher.calibration import Calibration
from potstill.models.teacher.demos import DemoSelector
from potstill.models.teacher.prompts import Demo
from potstill.models.teacher.hf import TeacherBase
from potstill.store import TeacherStore

if TYPE_CHECKING:
    from potstill.config.core import Config, Endpoint, FewShot, Teacher, VLLMEngine
    from potstill.rows.records import Record


@dataclass
class LabelledTeacher:
    """The teacher plus what every row's scoring needs: demonstrations and calibration. With a
    `store` that has a folder, every answer is looked up in the teacher store first and every
    new one is appended to it (potstill/store.py); `calls` and `cache_hits` count what that
    saved. Without one, nothing is kept."""
    teacher: TeacherBase          # HFTeacher, VLLMTeacher or potstill.models.teacher.remote.OpenAITeacher
    selector: DemoSelector | None
    calibration: Calibration
    store: TeacherStore | None = None
    calls: int = 0
    cache_hits: int = 0
    used_keys: list = field(default_factory=list)   # store keys read or written
    store_index: object = None                       # potstill.store.Index, built on first use

    @property
    def stores_answers(self) -> bool:
        return bool(self.store and self.store.folder)

    def stored_candidates(self, texts: Sequence[str], demos: Sequence[Sequence[Demo]]) -> np.ndarray:
        """Raw candidate log-probabilities [n, C], from the store where it has them."""
        encoded = [self.teacher.encode(t, d) for t, d in zip(texts, demos)]
        keyed = [self._key(e) for e in encoded]
        keys = [k for k, _ in keyed]
        self.used_keys += keys
        if self.store_index is None:
            self.store_index = self.store.index()
        found = self.store_index.lookup(set(keys))
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            answers = self.teacher.score_encoded([encoded[i] for i in missing])
            self.store.write([keys[i] for i in missing], answers, [keyed[i][1] for i in missing])
            found.update((keys[i], a) for i, a in zip(missing, answers))
        self.calls += len(missing)
        self.cache_hits += len(keys) - len(missing)
        return np.asarray([found[k] for k in keys], dtype=np.float64)

    def request_keys(self, texts: Sequence[str], demos: Sequence[Sequence[Demo]]) -> list[tuple[str, int]]:
        """(store key, prompt tokens) per text: what `stored_candidates` looks up (no weights)."""
        return [self._key(self.teacher.encode(t, d)) for t, d in zip(texts, demos)]

    def _key(self, encoded) -> tuple[str, int]:
        prompt = self.teacher.prompt_ids(encoded)
        return (self.store or TeacherStore("")).key(prompt, self.teacher.cand_ids), len(prompt)

    def demos(self, texts: Sequence[str]) -> list[list[Demo]] | None:
        return self.selector.select(texts) if self.selector else None

    def calibrate(self, raw, n_options=None):
        """Raw label log-probabilities [n, L] -> calibrated ones: a multiple-choice row's letters
        past its `n_options` get probability 0, then the calibration applies. numpy or torch
        (differentiable) in, the same out."""
        if n_options is not None:
            letters = np.arange(raw.shape[1])[None, :] >= np.asarray(n_options)[:, None]
            if isinstance(raw, np.ndarray):
                raw = np.where(letters, -np.inf, raw)
            else:
                import torch

                raw = raw.masked_fill(torch.from_numpy(letters), float("-inf"))
        return raw, self.calibration.apply(raw)

    def score(self, texts: list[str], n_options: list[int] | None = None,
              demos: Sequence[Sequence[Demo]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(raw, calibrated) label log-probabilities, each [len(texts), L]. With `n_options`
        (multiple choice) a row's letters past its own options get probability 0. `demos`
        overrides the selector's choice (the faithfulness test keeps a row's demonstrations)."""
        import torch

        demos = self.demos(texts) if demos is None else demos
        if self.stores_answers:
            cand = self.stored_candidates(texts, demos or [()] * len(texts))
            raw = self.teacher.label_scores(torch.from_numpy(cand)).numpy()
        else:
            self.calls += len(texts)
            raw = self.teacher.score_labels(texts, demos)
        return self.calibrate(raw, n_options)

    def from_candidates(self, cand: np.ndarray, n_options=None) -> tuple[np.ndarray, np.ndarray]:
        """(raw, calibrated) label log-probabilities from raw candidate log-probabilities [n, C]
        (what the teacher store keeps): the same sums, masks and calibration as `score`."""
        import torch

        return self.calibrate(self.teacher.label_scores(torch.from_numpy(np.asarray(cand))).numpy(),
                              n_options)

    def score_records(self, records: Sequence["Record"]) -> tuple[np.ndarray, np.ndarray]:
        n_options = [len(r.choices) if r.choices else len(self.teacher.labels) for r in records]
        return self.score([r.model_input for r in records], n_options)

    def close(self) -> None:
        """Release what the backend holds outside the shared weights."""
        self.teacher.close()


@dataclass(frozen=True)
class TeacherSetup:
    """How the teacher is set up; every field changes what it says, nothing else is in here."""
    model_path: str
    labels: tuple[str, ...]
    instruction: str | None = None
    backend: str = "hf"
    prompt_style: str = "labels"
    verbalizers: Mapping[str, Sequence[str]] | None = None
    batch_size: int = 8
    max_input_tokens: int = 512
    dtype: str = "float32"
    threads: int | None = None
    engine: "VLLMEngine | Endpoint | None" = None   # the backend's settings (vllm / openai)
    few_shot: "FewShot | None" = None
    embedder_path: str | None = None            # resolved once, for few_shot.selection=similar
    demo_pool: tuple[tuple[str, str], ...] = ()  # (model input, gold label) of the seed rows
    calibration: Calibration = field(default_factory=Calibration)
    store: TeacherStore | None = None            # backends.open_store: where answers are kept

    @classmethod
    def from_config(cls, cfg: "Config", model_path: str, seeds: Sequence["Record"] = (),
                    calibration: Calibration = Calibration(), store: TeacherStore | None = None,
                    threads: int | None = None) -> "TeacherSetup":
        """`threads`: torch threads per worker when the config leaves teacher.threads unset
        (the driver's share of the cores: beam_pipelines/threads.py)."""
        t = cfg.teacher
        embedder = _embedder_path(t.few_shot, bool(seeds))
        engine, batch_size = t.vllm, t.batch_size
        if t.backend == "openai":  # a canonical batch keeps max_concurrency requests in flight
            engine, batch_size = t.endpoint, max(t.batch_size, t.endpoint.max_concurrency)
        return cls(model_path, tuple(cfg.task.labels), cfg.task.instruction, t.backend,
                   t.prompt_style, t.verbalizers, batch_size, t.max_input_tokens, t.dtype,
                   t.threads or threads, engine, t.few_shot, embedder,
                   tuple((r.model_input, r.gold_label) for r in seeds), calibration, store)

    def with_calibration(self, calibration: Calibration) -> "TeacherSetup":
        return replace(self, calibration=calibration)

    def tuned(self, teacher: "Teacher", calibration: Calibration) -> "TeacherSetup":
        """This setup with the prompt, verbalizers and demonstrations of `teacher` (the settings
        the setup search chose) and the fitted calibration; the model, its store and the
        driver's thread share stay as they are."""
        return replace(self, prompt_style=teacher.prompt_style, verbalizers=teacher.verbalizers,
                       few_shot=teacher.few_shot, calibration=calibration,
                       embedder_path=_embedder_path(teacher.few_shot, bool(self.demo_pool)))

    def for_assistant(self, model_path: str, batch_size: int | None = None) -> "TeacherSetup":
        """The teaching assistant: the teacher's prompt and verbalizers on another (small) model,
        zero-shot, uncalibrated, transformers backend (a second vLLM engine would only cost
        memory)."""
        return replace(self, model_path=model_path, backend="hf", few_shot=None, demo_pool=(),
                       embedder_path=None, calibration=Calibration(), store=None,
                       batch_size=batch_size or self.batch_size)

    def _kwargs(self) -> dict:
        return dict(style=self.prompt_style, verbalizers=self.verbalizers,
                    max_input_tokens=self.max_input_tokens,
                    demo_max_tokens=self.few_shot.max_tokens if self.few_shot else 128)

    def prompter(self) -> LabelledTeacher:
        """The teacher without weights: tokenizer, prompt, candidates, demonstrations and
        calibration; enough to encode requests and to turn stored answers into labels."""
        teacher = TeacherBase(self.model_path, list(self.labels), self.instruction, **self._kwargs())
        return LabelledTeacher(teacher, self._selector(teacher), self.calibration, self.store)

    def load(self, backend: str | None = None) -> LabelledTeacher:
        """The teacher in this process. `backend` overrides the setup's: code that needs the torch
        model itself (attribution) asks for "hf". Weights are shared per process."""
        kwargs = dict(self._kwargs(), batch_size=self.batch_size, dtype=self.dtype,
                      threads=self.threads)
        backend = backend or self.backend
        teacher = load_scorer(self.model_path, list(self.labels), self.instruction, backend,
                              self.engine, **kwargs)
        # A remote teacher's store holds the served model's answers (backends.open_store): the
        # local model that attribution asks for answers past it, unstored.
        same = backend == self.backend or "openai" not in (backend, self.backend)
        return LabelledTeacher(teacher, self._selector(teacher), self.calibration,
                               self.store if same else None)

    def _selector(self, teacher: TeacherBase) -> DemoSelector | None:
        fs = self.few_shot
        if not fs or not fs.k or not self.demo_pool:
            return None
        embed = None
        if fs.selection == "similar":
            from potstill.models.embed import Embedder
            from potstill.models.loading import shared

            embed = shared(("embedder", self.embedder_path), lambda: Embedder(self.embedder_path))
        answers = dict(zip(self.labels, teacher.prompt.verbalizer.answers))
        texts, gold = zip(*self.demo_pool)
        return DemoSelector(list(texts), list(gold), answers, fs.k, fs.selection, embed, fs.seed)


def _embedder_path(few_shot: "FewShot", has_demos: bool) -> str | None:
    """The demonstration embedder's folder, resolved once: only k > 0 similar demonstrations
    drawn from gold rows need one."""
    if not (few_shot.k and has_demos and few_shot.selection == "similar"):
        return None
    from potstill.models.registry import resolve_model

    return resolve_model(few_shot.embedder).path

