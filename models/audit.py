"""Set up the teacher as configured (prompt style, verbalizers, demonstrations, calibration) and
audit it on the gold seed rows before any budget is spent on the pool.

The audit scores every seed row with the same prompt the pool will get; demonstrations are
drawn from the other seed rows (leave-one-out), so the figures are out-of-sample for the
prompt. The fitted temperature is in-sample (one scalar, fitted on the same rows): the
calibrated ECE is therefore optimistic on small seed sets, and the report says so.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from models.calibration import Calibration, contextual_prior, fit_temperature
from models.demos import DemoSelector
from models.metrics import classification_metrics
from models.registry import resolve_model
from models.teacher import HFTeacher, TeacherBase, normalise
from potstill.config import Config
from potstill.records import Record, read_configured

log = logging.getLogger(__name__)


class AuditFailed(RuntimeError):
    """The teacher is below `audit.min_accuracy` on the gold rows; nothing was labelled."""


@dataclass
class LabelledTeacher:
    """The teacher plus what every row's scoring needs: demonstrations and calibration."""
    teacher: TeacherBase          # HFTeacher or models.vllm_backend.VLLMTeacher
    selector: DemoSelector | None
    calibration: Calibration

    def score(self, texts: list[str], n_options: list[int] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """(raw, calibrated) label log-probabilities, each [len(texts), L]. With `n_options`
        (multiple choice) a row's letters past its own options get probability 0."""
        demos = self.selector.select(texts) if self.selector else None
        raw = self.teacher.score_labels(texts, demos)
        if n_options is not None:
            raw[np.arange(raw.shape[1])[None, :] >= np.asarray(n_options)[:, None]] = -np.inf
        return raw, self.calibration.apply(raw)

    def score_records(self, records) -> tuple[np.ndarray, np.ndarray]:
        n_options = [len(r.choices) if r.choices else len(self.teacher.labels) for r in records]
        return self.score([r.model_input for r in records], n_options)

    def close(self) -> None:
        """Release the backend's engine now (vLLM), rather than when the object is collected."""
        self.teacher.close()


def read_seed(cfg: Config) -> list[Record]:
    return read_configured(cfg, "seed")[0] if cfg.corpus.seed is not None else []


def build_teacher(cfg: Config, model_path: str, seeds: list[Record],
                  calibration: Calibration = Calibration(), backend: str | None = None
                  ) -> LabelledTeacher:
    """`backend` overrides cfg.teacher.backend: code that needs the torch model itself
    (attribution) asks for "hf"."""
    t = cfg.teacher
    kwargs = dict(style=t.prompt_style, verbalizers=t.verbalizers, batch_size=t.batch_size,
                  max_input_tokens=t.max_input_tokens, demo_max_tokens=t.few_shot.max_tokens,
                  dtype=t.dtype, threads=t.threads)
    if (backend or t.backend) == "vllm":
        from models.vllm_backend import VLLMTeacher

        teacher = VLLMTeacher(model_path, cfg.task.labels, cfg.task.instruction, engine=t.vllm, **kwargs)
    else:
        teacher = HFTeacher(model_path, cfg.task.labels, cfg.task.instruction, **kwargs)
    selector = None
    if t.few_shot.k and seeds:
        embed = None
        if t.few_shot.selection == "similar":
            from models.embed import Embedder

            embed = Embedder(resolve_model(t.few_shot.embedder).path)
        answers = dict(zip(cfg.task.labels, teacher.prompt.verbalizer.answers))
        selector = DemoSelector([r.model_input for r in seeds], [r.gold_label for r in seeds], answers,
                                t.few_shot.k, t.few_shot.selection, embed, t.few_shot.seed)
    return LabelledTeacher(teacher, selector, calibration)


def fit_calibration(cfg: Config, lt: LabelledTeacher, seed_raw: np.ndarray,
                    gold: np.ndarray) -> Calibration:
    mode = cfg.teacher.calibration
    prior = None
    if "contextual" in mode:
        inputs = list(cfg.teacher.content_free_inputs)
        demos = lt.selector.select(inputs) if lt.selector else None
        prior = contextual_prior(lt.teacher.score_labels(inputs, demos))
    temperature = 1.0
    if "temperature" in mode:
        temperature = fit_temperature(Calibration(prior).apply(seed_raw), gold)
    return Calibration(prior, temperature)


def audit(cfg: Config, lt: LabelledTeacher, seeds: list[Record]) -> dict:
    """Score the seed rows, fit the calibration onto `lt`, and report quality before/after."""
    labels = cfg.task.labels
    report = {"n": len(seeds), "prompt_style": cfg.teacher.prompt_style,
              "few_shot": cfg.teacher.few_shot.model_dump(), "calibration_mode": cfg.teacher.calibration}
    if not seeds:
        lt.calibration = fit_calibration(cfg, lt, np.zeros((0, len(labels))), np.zeros(0, int))
        report["calibration"] = lt.calibration.to_json()
        report["note"] = "no seed rows: teacher quality unknown"
        return report
    gold = np.array([labels.index(r.gold_label) for r in seeds])
    start = time.perf_counter()
    raw, _ = lt.score_records(seeds)
    report["rows_per_second"] = round(len(seeds) / (time.perf_counter() - start), 3)
    lt.calibration = fit_calibration(cfg, lt, raw, gold)
    for name, probs in (("raw", normalise(raw)), ("calibrated", np.exp(lt.calibration.apply(raw)))):
        report[name] = classification_metrics(gold.tolist(), probs.argmax(1).tolist(), labels,
                                              probs=probs)
    report["calibration"] = lt.calibration.to_json()
    report["accuracy"] = report["calibrated"]["accuracy"]
    report["temperature_in_sample"] = "temperature" in cfg.teacher.calibration
    return report


def check(cfg: Config, report: dict) -> None:
    floor = cfg.audit.min_accuracy
    if floor is not None and report.get("accuracy") is not None and report["accuracy"] < floor:
        raise AuditFailed(
            f"teacher accuracy on the {report['n']} gold seed rows is {report['accuracy']:.3f}, "
            f"below audit.min_accuracy={floor}: stopped before labelling the pool. Try "
            "teacher.few_shot.k, teacher.calibration, teacher.verbalizers or a stronger teacher.model.")
