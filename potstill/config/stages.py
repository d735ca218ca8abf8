"""The optional stages' configuration blocks (generation, saliency, signals, teacher budget),
part of the one typed config in potstill/config/core.py (which re-exports them)."""
from __future__ import annotations

import types
import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _numbers_only(annotation) -> bool:
    """An int or float setting (optional or not), or a list of them: one where true/false
    makes no sense."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _numbers_only(args[0])
    if typing.get_origin(annotation) is list:
        return bool(args) and all(a in (int, float) for a in args)
    return annotation in (int, float)


class _Strict(BaseModel):
    """Every config block: unknown keys are errors, and a boolean is never a number. pydantic
    reads `true` as 1 for an int or float field (`teacher.batch_size: true` ran with batches
    of one); here it is refused, naming the key. Other conversions stay: PyYAML reads `1e-4`
    as a string, and a float setting still takes it."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value, info):
        given = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) for v in given) and \
                _numbers_only(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"a number is expected, not {str(value).lower()} (a boolean)")
        return value


class Signals(_Strict):
    """Student and teaching-assistant signals (LLKD arXiv 2411.08028, TA-in-the-loop arXiv
    2406.05322): a warm-up student trained on the seed rows scores every pool row
    (models/student/signals.py, transforms/signals.py); a small TA model scores its confidence in the
    teacher's and the student's labels."""
    enabled: bool = False
    consistency_samples: int = Field(8, ge=2, description="MC-dropout predictions per row for "
                                     "the student's self-consistency")
    ta_model: str | None = Field("smollm2-135m-instruct", description="teaching-assistant causal "
                                 "LM (packaged name or local folder); null = no TA signals")
    ta_batch_size: int = Field(16, ge=1)
    batch_size: int = Field(64, ge=1, description="student rows per forward pass")
    seed: int = 0


class Budget(_Strict):
    """Spend at most `teacher_calls` teacher scorings on pool rows, chosen by sql/budget.sql
    from the student's signals, in rounds (the student is retrained between rounds)."""
    teacher_calls: int | None = Field(None, ge=1, description="pool rows the teacher may score; "
                                      "null = all (seed rows are always scored and not counted)")
    rounds: int = Field(1, ge=1)
    strategy: Literal["need", "random"] = Field(
        "need", description="need: highest student entropy and inconsistency first, per predicted "
        "class in turn; random: a seeded random sample (the baseline)")
    retrain: bool = Field(True, description="retrain the student on the seed and teacher-labelled "
                          "rows between rounds")
    seed: int = 0


class Generation(_Strict):
    """Generation-distillation (arXiv 2002.00733): new label-conditioned examples, scored by the
    teacher like corpus rows (models/generation/generate.py, models/generation/text_filters.py, transforms/generate.py)."""
    enabled: bool = False
    model: str | None = Field(None, description="generator model; null = the teacher's model")
    per_label: int = Field(50, ge=1, description="outputs requested per label")
    outputs_per_prompt: int = Field(1, ge=1, description="samples per prompt (per_label must be a multiple)")
    examples_per_prompt: int = Field(4, ge=0, description="k examples shown in each prompt")
    example_source: Literal["seed", "unlabeled", "both"] = "both"
    prompt: str | None = Field(None, description="closing request with {label}, e.g. 'Write one new "
                               "short movie review whose sentiment is {label}.'; null = a generic one")
    temperature: float = Field(0.9, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(96, ge=1)
    batch_size: int = Field(8, ge=1, description="prompts per generate call")
    seed: int = 0
    min_chars: int = Field(10, ge=1)
    max_chars: int = Field(1000, ge=1)
    min_letter_share: float = Field(0.5, ge=0, le=1, description="letters / non-space characters")
    max_repeated_ngram_ratio: float = Field(0.3, ge=0, le=1)
    drop_truncated: bool = Field(True, description="reject outputs cut off by max_new_tokens")
    max_example_overlap: float = Field(0.5, ge=0, le=1, description="reject copies: share of char "
                                       "5-grams found in one of the prompt's examples")
    drop_label_mentions: bool = Field(False, description="reject texts naming a label (sentiment-like tasks)")
    near_dup_threshold: float = Field(0.7, gt=0, le=1, description="MinHash Jaccard of char 5-grams")
    num_perm: int = Field(128, ge=16, description="MinHash permutations; ~4 KB per reference row at 128")

    @model_validator(mode="after")
    def _consistent(self) -> "Generation":
        if self.per_label % self.outputs_per_prompt:
            raise ValueError("generation.per_label must be a multiple of generation.outputs_per_prompt")
        if self.min_chars > self.max_chars:
            raise ValueError("generation.min_chars is larger than generation.max_chars")
        return self


class Saliency(_Strict):
    """Saliency rationales (arXiv 2409.12586): captum attributions of the teacher's label over the
    text's words (models/saliency/attribution.py, transforms/saliency.py, models/saliency/faithfulness.py)."""
    enabled: bool = False
    method: Literal["saliency", "input_x_gradient", "integrated_gradients"] = "saliency"
    ig_steps: int = Field(32, ge=2, description="integrated gradients: steps along the path")
    top_k: int = Field(5, ge=1, description="words kept in the rationale")
    explain: Literal["teacher", "gold"] = Field(
        "teacher", description="label explained: the teacher's, or the gold label on seed rows")
    batch_size: int = Field(4, ge=1, description="rows per forward/backward pass")
    internal_batch_size: int = Field(32, ge=1, description="IG: rows x steps per pass (>= batch_size)")
    faithfulness_sample: int = Field(64, ge=0, description="rows in the deletion test; 0 = skip it")
    seed: int = 0

    @model_validator(mode="after")
    def _batches(self) -> "Saliency":
        if self.method == "integrated_gradients" and self.internal_batch_size < self.batch_size:
            raise ValueError("saliency.internal_batch_size must be >= saliency.batch_size "
                             "(captum runs every row of a batch at each IG step)")
        return self
