"""Config sections about quality: the teacher's audit and setup search, the student's recipe,
and the validation gate. Part of the one config model (potstill/config/core.py re-exports them)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from potstill.config.stages import _Strict


class AuditSearch(_Strict):
    """The teacher setup search on the gold seed rows (models/quality/tuning.py). `teacher.*` settings the
    config sets explicitly are never searched; the grid below only spans the others."""
    enabled: bool = Field(True, description="search the teacher setup on the gold rows before labelling")
    verbalizers: list[Literal["exact", "cased", "alternatives"]] = Field(
        ["exact", "cased", "alternatives"], min_length=1,
        description="exact: the label strings; cased: their case variants summed (label, Label, "
        "LABEL, Title Case); alternatives: cased labels plus `alternatives`, summed")
    alternatives: dict[str, list[str]] = Field(
        default_factory=dict, description="plain-language answers per label, e.g. {ham: [normal email]}")
    calibration: list[Literal["none", "contextual"]] = Field(["none", "contextual"], min_length=1)
    few_shot_k: list[int] = Field([0, 4], min_length=1, description="demonstrations per row tried")
    prompt_styles: list[Literal["labels", "letters"]] = Field(["labels"], min_length=1)
    seed: int = Field(0, description="fold assignment of the seed rows")
    cost_margin: float = Field(0.02, ge=0, le=1, description="a setup with more demonstrations per "
                               "row (k: every pool row's prompt carries k gold rows) is chosen only "
                               "when its macro-F1 beats the best cheaper one by more than this, and "
                               "by more than one seed row's worth (1/n)")
    cost_confidence: float = Field(0.8, ge=0, le=1, description="... and wins in at least this "
                                   "share of paired bootstrap resamples of the seed rows (0: the "
                                   "margin alone decides)")

    @field_validator("few_shot_k")
    @classmethod
    def _non_negative(cls, ks: list[int]) -> list[int]:
        if any(k < 0 for k in ks):
            raise ValueError("few_shot_k values must be >= 0")
        return sorted(set(ks))


class Audit(_Strict):
    """Teacher quality on the gold seed rows, measured before the pool is labelled."""
    min_accuracy: float | None = Field(None, ge=0, le=1, description="stop the job below this")
    min_seed_rows: int = Field(10, ge=2, description="fewer gold rows than this: the teacher is "
                               "neither tuned nor judged (the figures would be noise)")
    on_weak_teacher: Literal["fallback", "stop", "warn", "continue"] = Field(
        "fallback", description="a weak teacher (no better than the majority class, ~zero recall on "
        "a class, or worse than the gold rows alone): fallback labels the pool with the gold rows' "
        "own classifier instead (no LLM calls on the pool; models/quality/fallback.py), stop ends "
        "the job before labelling, warn labels with the LLM anyway, continue does so silently")
    min_class_recall: float = Field(0.1, ge=0, le=1, description="a class below this recall is ~zero")
    min_class_support: int = Field(3, ge=1, description="classes with fewer gold rows are not judged on recall")
    compare_gold: bool = Field(True, description="gate: compare with a classifier on "
                               "`audit.gold_encoder`'s embeddings of the gold rows (cross-validated)")
    gold_encoder: str = Field("all-mpnet-base-v2", description="the encoder under the gold rows' "
                              "classifier that the gate compares the teacher with and that labels "
                              "the pool in a fallback (the strongest packaged one by default)")
    gold_margin: float = Field(0.02, ge=0, le=1, description="weak when the teacher's macro-F1 is "
                               "below the gold-rows classifier's minus this (both are estimates "
                               "from the same few seed rows)")
    gold_confidence: float = Field(0.8, ge=0, le=1, description="... and the classifier beats the "
                                   "teacher's macro-F1 in at least this share of paired bootstrap "
                                   "resamples of the seed rows (a gap a few rows could close does "
                                   "not stop the LLM; 0 = the margin alone decides)")
    folds: int = Field(5, ge=2, description="cross-validation folds over the seed rows")
    self_training_rounds: int = Field(
        2, ge=0, description="fallback: rounds of class-balanced self-training of the gold rows' "
        "classifier before it labels the pool (round r refits it on the seed rows plus, per "
        "class, the share r/(R+1) of the sampled pool rows it predicts that class most surely; "
        "models/quality/self_training.py); 0: the classifier as fitted on the seed rows")
    self_training_max_rows: int = Field(
        20_000, ge=1, description="fallback self-training: at most this many pool rows (a fixed "
        "sample by audit.search.seed, seed and test rows left out) are read and embedded in the "
        "driver to pseudo-label")
    search: AuditSearch = AuditSearch()


# The student settings the warm-up student (models/student/signals.py: fine-tuned with trainer.fit, no
# recipe, no selection) reads: with signals.enabled they change the published data, the rest never do.
WARM_UP_FIELDS = ("model", "epochs", "min_steps", "batch_size", "learning_rate", "max_length",
                  "temperature", "seed_weight")


class Student(_Strict):
    model: str = Field("all-mpnet-base-v2", description="the student's pretrained encoder; the "
                       "default (with encoder: frozen) measured best on every public corpus "
                       "(docs/measurements/student-training.md)")
    encoder: Literal["finetune", "frozen"] = Field(
        "frozen", description="finetune: train encoder and head; frozen: one encoder pass, then "
        "only the label head, fitted with a cross-validated L2 penalty (models/student/head.py): fast, "
        "for large encoders on a CPU")
    head_c: list[float] = Field([0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0], min_length=1,
                                description="frozen: inverse L2 strengths the head's "
                                "cross-validation picks from")
    head_folds: int = Field(5, ge=2, description="frozen: cross-validation folds for head_c")
    embedding_cache: bool = Field(
        True, description="keep the pretrained encoder's outputs under $POTSTILL_CACHE/embeddings "
        "(models/embed_cache.py): a frozen student, and the trust recipe's gold-rows classifier, "
        "never embed the same text twice across runs")
    epochs: int = Field(4, ge=1)
    min_steps: int = Field(100, ge=0, description="more epochs for small sets until this many updates")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    max_length: int = Field(128, ge=8)
    temperature: float = Field(2.0, gt=0, description="KD temperature applied to label_probs")
    seed_weight: float = Field(1.0, ge=0, description="loss multiplier for gold seed rows")
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    export_onnx: bool = Field(True, description="also write OUT/onnx/: the student (encoder, pooling, "
                              "head) as one ONNX graph with its tokenizer, checked with onnxruntime "
                              "against potstill's own probabilities on every test row")
    gold_only_baseline: bool = Field(
        True, description="with train_on=all, also train the gold-only student (the same setup on the "
        "seed rows alone) into OUT/gold-only/: metrics.json, the model card and the report show the "
        "distilled student beside it, and a distilled student that ends below it is said at WARNING")
    input: Literal["text", "text+rationale"] = Field(
        "text", description="text+rationale: the saliency rationale after a [SEP] (models/student/rationale_input.py)")
    recipe: Literal["trust", "kd"] = Field(
        "trust", description="trust: mix the teacher's distribution with a gold-rows classifier's, "
        "weighted by how much the seed rows say each deserves (models/quality/trust.py); kd: label_probs as is")
    trust_pooling: Literal["superiority", "ratio"] = Field(
        "superiority", description="trust: the teacher's weight on a row is the probability that its "
        "claim is the more informative one (superiority) or the ratio of the two lifts (ratio)")
    trust_strength: float = Field(2.0, gt=0, description="trust: pseudo-rows pulling each class's "
                                  "precision toward its base rate")
    probe_c: list[float] = Field(
        [0.3, 1.0, 3.0, 10.0, 30.0, 100.0], min_length=1, description="trust and the gate: inverse "
        "L2 strengths of the gold-rows logistic regression; the one whose out-of-fold predictions "
        "on the seed rows have the lowest log-loss is used (one value: that one)")
    probe_folds: int = Field(5, ge=2, description="trust: folds for the gold classifier's own precision")
    selection: Literal["none", "llkd"] = Field(
        "none", description="llkd: per-batch selection inside the training loop (models/student/llkd.py)")
    llkd_momentum: float = Field(0.9, ge=0, lt=1, description="llkd: weight of earlier batches in "
                                 "the per-class moving averages")
    llkd_confidence_scale: float = Field(1.0, ge=0, description="llkd: keep rows whose teacher "
                                         "confidence >= scale x its class's moving average")
    llkd_need_scale: float = Field(1.0, ge=0, description="llkd: ... and whose current student "
                                   "entropy >= scale x its class's moving average; 0 = off")
    llkd_warmup_share: float = Field(0.1, ge=0, le=1, description="llkd: share of steps that "
                                     "train on every row while the averages settle")

    @field_validator("probe_c", mode="before")
    @classmethod
    def _one_c_is_a_grid_of_one(cls, cs):
        return [cs] if isinstance(cs, (int, float)) and not isinstance(cs, bool) else cs

    @field_validator("head_c", "probe_c")
    @classmethod
    def _positive_c(cls, cs: list[float], info) -> list[float]:
        if any(c <= 0 for c in cs):
            raise ValueError(f"{info.field_name} values must be > 0")
        return cs

    @model_validator(mode="after")
    def _selection_needs_batches(self):
        if self.encoder == "frozen" and self.selection == "llkd":
            raise ValueError("selection=llkd selects rows per training batch as the encoder is "
                             "fine-tuned; with encoder=frozen the head is fitted in one pass: "
                             "use selection=none, or encoder=finetune")
        return self


class Validation(_Strict):
    min_rows: int = Field(1, ge=0, description="fewest rows a version may publish")
    max_label_share: float | None = Field(
        None, gt=0, le=1, description="label collapse: the most common teacher label may hold at "
        "most this share of the teacher-labelled rows, e.g. 0.9; null = off (the audit's gate is "
        "the default guard: it stops a teacher with ~zero recall on a class before labelling)")
    label_share_min_rows: int = Field(30, ge=1, description="the share is checked from this many "
                                      "teacher-labelled rows on")
    chunk_rows: int = Field(50_000, ge=1, description="rows the gate validates at a time: memory "
                            "stays flat however many rows a version publishes")
