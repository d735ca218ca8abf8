"""Fine-tune the student on a published dataset version, then score it on the test split.

    python -m potstill.models.student.trainer --dataset VERSION_DIR --config CONFIG.yaml --out DIR \
        [--train-on all|seed] [--set student.epochs=2 ...]

Loss, per row i with weight w_i >= 0 (the dataset's `weight` column):
  seed rows (gold):       l_i = seed_weight * CE(z_i, gold label)       (cross-entropy on `label`)
  corpus/generated rows:  l_i = T^2 * KL(p_T || softmax(z_i / T))
                              = T^2 * sum_j p_T,j * (log p_T,j - log softmax(z_i / T)_j)
  where p_T,j = p_j^(1/T) / sum_k p_k^(1/T) and p = label_probs (the teacher's distribution),
  T = student.temperature (T > 1 softens, T < 1 sharpens), z_i the student's logits.
  batch loss = sum_i w_i * l_i / sum_i w_i.
The T^2 factor keeps KD gradients on the scale of the CE term as T changes (Hinton et al.).
With `student.recipe: trust` (the default) and gold seed rows in the version, p on the pool rows
is first mixed with a gold-rows classifier's distribution, weighted per row by how much the
seed rows say each source's claim is worth (formulas in models/quality/trust.py); what was decided and
why goes to metrics.json under `recipe`. `student.recipe: kd` uses label_probs as published.
Rows of weight 0 are dropped before training: they would add nothing to any batch loss.
`train_on="seed"` keeps only the seed rows: the gold-only baseline the KD run is compared to.

Fixed choices (not in the config): AdamW with weight decay 0.01, gradient-norm clip at 1.0,
linear warmup over the first 10% of steps then linear decay to 0, padding per batch.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from potstill.models.student.losses import row_losses
from potstill.models.metrics import classification_metrics
from potstill.models.student.rationale_input import compute_test_rationales, with_rationale
from potstill.models.registry import ensure_offline, resolve_model
from potstill.models.student.student import StudentClassifier, embeddings, load_student, predict_proba
from potstill.models.student.data import TrainerError, load_dataset, log, read_test, seed_dataset  # noqa: F401
from potstill.config.core import Config, ConfigError, Student, load_config
from potstill.progress import Progress

WARMUP_SHARE, WEIGHT_DECAY, CLIP_NORM = 0.1, 0.01, 1.0
def kd_targets(probs: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1/T) renormalised per row."""
    q = np.power(np.clip(probs, 0.0, None), 1.0 / temperature)
    return q / q.sum(axis=1, keepdims=True)


def batch_loss(logits: torch.Tensor, targets: torch.Tensor, label_idx: torch.Tensor,
               is_seed: torch.Tensor, weight: torch.Tensor, temperature: float,
               seed_weight: float) -> torch.Tensor:
    """sum(w * l) / sum(w) with l as in the module docstring."""
    per_row = row_losses(logits, targets, label_idx, is_seed, temperature, seed_weight)
    return (weight * per_row).sum() / weight.sum()


def recipe_targets(model: StudentClassifier, texts: list[str], probs: np.ndarray,
                   teacher: np.ndarray, label_idx: np.ndarray, is_seed: np.ndarray,
                   s: Student, labels: list[str], features: np.ndarray | None = None,
                   embed: Callable[[list[str]], np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """The training targets per `student.recipe` and the record of the decision; `features`,
    when given, are the pretrained encoder's mean-pooled outputs of `texts` (saves a pass), else
    `embed(texts)` gives them when needed (else one pass of `model`'s encoder)."""
    from potstill.models.quality import trust

    if s.recipe == "kd":
        return probs, {"recipe": "kd", "why": "student.recipe=kd: label_probs as published"}
    measured = is_seed & ~np.isnan(teacher).any(axis=1)
    pool = ~is_seed
    if measured.sum() < 2 or not pool.any():
        return probs, {"recipe": "kd", "why": f"{int(measured.sum())} gold seed rows with teacher "
                       f"scores and {int(pool.sum())} pool rows: nothing to decide trust from or apply it to"}
    if features is None:
        features = embed(texts) if embed else embeddings(
            model, texts, batch_size=max(s.batch_size, 64), max_length=s.max_length, normalise=False)
    x = features / np.clip(np.linalg.norm(features, axis=1, keepdims=True), 1e-12, None)
    mixed, report = trust.decide(x[measured], label_idx[measured], teacher[measured], x[pool],
                                 probs[pool], labels, s.trust_strength, s.probe_c,
                                 s.probe_folds, s.seed, s.trust_pooling)
    out = probs.copy()
    out[pool] = mixed
    return out, report


def new_student(s: Student, labels: list[str]) -> tuple[StudentClassifier, object]:
    """A fresh label head over the configured pretrained encoder, and the resolved model."""
    try:
        spec = resolve_model(s.model)
    except (ValueError, RuntimeError) as err:
        raise TrainerError(f"student.model: {err}") from None
    return StudentClassifier.from_pretrained_encoder(spec.path, labels), spec


def fit(model: StudentClassifier, texts: list[str], probs: np.ndarray, label_idx: np.ndarray,
        is_seed: np.ndarray, weight: np.ndarray, s: Student, rng: np.random.Generator,
        selector=None) -> tuple[int, list[float], float]:
    """Train `model` in place on the rows (loss in the module docstring); returns
    (epochs, loss per epoch, seconds). `selector` (models/student/llkd.py) drops rows per batch."""
    tokenizer, n = model.tokenizer, len(texts)
    encoded = tokenizer(texts, truncation=True, max_length=s.max_length)
    targets = torch.tensor(kd_targets(probs, s.temperature), dtype=torch.float32)
    label_idx, is_seed = torch.tensor(label_idx), torch.tensor(is_seed)
    weight = torch.tensor(weight, dtype=torch.float32)
    # optimizer: AdamW, linear warmup then linear decay to 0
    # Small sets (the gold-only baseline) get at least `min_steps` updates, so a 32-row
    # baseline is not judged after 4 optimiser steps.
    steps_per_epoch = math.ceil(n / s.batch_size)
    epochs = max(s.epochs, math.ceil(s.min_steps / steps_per_epoch))
    total_steps = steps_per_epoch * epochs
    warmup = max(1, int(WARMUP_SHARE * total_steps))
    select_from = int(s.llkd_warmup_share * total_steps)
    conf_all, cls_all = probs.max(axis=1), probs.argmax(axis=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, weight_decay=WEIGHT_DECAY)

    def lr_factor(step: int) -> float:
        return min((step + 1) / warmup, (total_steps - step) / max(1, total_steps - warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    # loop; progress is rate-limited (potstill.progress): a 100-epoch baseline logs a few lines
    epoch_losses = []
    progress = Progress("trainer", n * epochs, unit="rows")
    t_train = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        loss_sum, weight_sum = 0.0, 0.0
        order = rng.permutation(n)
        for step, start in enumerate(range(0, n, s.batch_size)):
            idx = order[start:start + s.batch_size]
            batch = tokenizer.pad({k: [encoded[k][i] for i in idx] for k in encoded}, return_tensors="pt")
            logits = model(**batch)
            w_batch = weight[idx]
            if selector is not None:  # LLKD: the current student's need, from these logits
                p = torch.softmax(logits.detach().float(), dim=-1)
                need = (-(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(p.shape[1])).numpy()
                keep = selector.select(conf_all[idx], cls_all[idx], need, is_seed[idx].numpy(),
                                       apply=epoch * steps_per_epoch + step >= select_from)
                w_batch = w_batch * torch.tensor(keep, dtype=w_batch.dtype)
            w = float(w_batch.sum())
            if w == 0:  # nothing kept: no step, but the schedule moves on
                schedule.step()
                continue
            loss = batch_loss(logits, targets[idx], label_idx[idx], is_seed[idx], w_batch,
                              s.temperature, s.seed_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            optimizer.step()
            schedule.step()
            loss_sum, weight_sum = loss_sum + loss.item() * w, weight_sum + w
            progress.update(len(idx), note=f"epoch {epoch + 1}/{epochs} step {step + 1}/"
                                           f"{steps_per_epoch} loss {loss_sum / max(weight_sum, 1e-12):.4f}")
        epoch_losses.append(loss_sum / max(weight_sum, 1e-12))

    return epochs, epoch_losses, time.perf_counter() - t_train


def score(model, tokenizer, s: Student, labels: list[str], texts: list[str], y: np.ndarray,
          with_probs: bool = False, features: np.ndarray | None = None):
    """Test metrics (and, with `with_probs`, the probabilities they came from); `features`, when
    given, are the encoder's mean-pooled outputs of `texts` (a frozen encoder's, from the cache):
    only the head runs."""
    if features is not None:
        with torch.inference_mode():
            probs = torch.softmax(model.head(torch.as_tensor(features)).float(), dim=-1).numpy()
    else:
        probs = predict_proba(model, tokenizer, texts, batch_size=max(s.batch_size, 64),
                              max_length=s.max_length, progress="evaluate (student)")
    metrics = classification_metrics(y, probs.argmax(axis=1), labels, probs=probs)
    return (metrics, probs) if with_probs else metrics


def train(dataset_dir: str | Path | None, cfg: Config, out_dir: str | Path, train_on: str = "all",
          compare: dict[str, str | Path] | None = None) -> dict:
    """Train a student on the version at dataset_dir, save it to out_dir, return its metrics.
    With train_on="seed" and no dataset_dir, on the config's gold seed rows alone (the gold-only
    student, the baseline every distilled student is compared with).

    Besides potstill's own folder, OUT/hf/ holds the same model as a standard transformers
    classifier with a model card (models/student/hf_export.py); `compare` names other metrics.json
    files (or folders holding one: the gold-only student, the teacher's `evaluate --out`) to
    show beside this student's metrics in that card."""
    if train_on not in ("all", "seed"):
        raise TrainerError(f"train_on must be 'all' or 'seed', got {train_on!r}")
    s = cfg.student
    ensure_offline()
    torch.set_num_threads(s.threads or os.cpu_count() or 1)
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)

    # data: fail on bad input (labels, test split) before any minute is spent training
    if dataset_dir is None and train_on != "seed":
        raise TrainerError("a published version (--dataset) is needed unless --train-on seed")
    data, manifest = (seed_dataset(cfg) if dataset_dir is None
                      else load_dataset(dataset_dir, cfg.task.labels))
    test_texts, test_y, n_rejected = read_test(cfg)
    keep = data["weight"] > 0
    if train_on == "seed":
        keep &= data["is_seed"]
        if s.seed_weight == 0:
            raise TrainerError("train_on=seed with student.seed_weight=0 would learn nothing")
    if not keep.any():
        raise TrainerError(f"no rows to train on (train_on={train_on}, rows with weight > 0: "
                           f"{int((data['weight'] > 0).sum())} of {len(data['weight'])})")
    texts = [t for t, k in zip(data["texts"], keep) if k]
    n = len(texts)
    log(f"{n} training rows ({int(data['is_seed'][keep].sum())} seed) of {len(keep)}; "
        f"train_on={train_on}; {len(test_texts)} test rows")

    model, spec = new_student(cfg.student, cfg.task.labels)
    tokenizer = model.tokenizer
    if s.input == "text+rationale":  # models/student/rationale_input.py: format, and the test-time choice
        if data["rationales"] is None:
            raise TrainerError("student.input=text+rationale: the dataset has no rationale column")
        texts = with_rationale(texts, [r for r, k in zip(data["rationales"], keep) if k], tokenizer)
    probs, recipe, head = data["probs"][keep], None, None
    cache_use: dict[str, dict] = {}

    def pretrained(rows: list[str], part: str) -> np.ndarray:
        """The PRETRAINED encoder's outputs of `rows` (models/embed_cache.py when enabled):
        called before fine-tuning changes it, or for a frozen encoder."""
        from potstill.models.student.head import pretrained_features

        x, record = pretrained_features(model, spec, rows, s)
        if record is not None:
            cache_use[part] = record
            log(f"embedding cache ({part}): {record['from_cache']} of {record['rows']} rows read, "
                f"{record['embedded']} embedded")
        return x

    frozen = s.encoder == "frozen"  # models/student/head.py: one encoder pass, the head fitted on its outputs
    features = pretrained(texts, "train") if frozen else None
    if train_on == "all":  # the gold-only baseline has no teacher to trust
        probs, recipe = recipe_targets(model, texts, probs, data["teacher_probs"][keep],
                                       data["label_idx"][keep], data["is_seed"][keep], s, cfg.task.labels, features,
                                       embed=lambda rows: pretrained(rows, "train"))
        log(f"recipe {recipe['recipe']}: {recipe['why']}")
    selector = None
    if s.selection == "llkd" and train_on == "all":
        from potstill.models.student.llkd import LLKDSelector

        selector = LLKDSelector(len(cfg.task.labels), s.llkd_momentum, s.llkd_confidence_scale,
                                s.llkd_need_scale)
    if features is not None:
        from potstill.models.student.head import train_head

        head = train_head(model, features, kd_targets(probs, s.temperature), data["label_idx"][keep],
                          data["is_seed"][keep], data["weight"][keep], s)
        log(f"frozen encoder: head fitted with C={head['c']} (cross-validated), "
            f"train loss {head['train_loss']:.4f}")
        epochs, epoch_losses, seconds = 0, [head["train_loss"]], head["seconds"]
    else:
        epochs, epoch_losses, seconds = fit(model, texts, probs, data["label_idx"][keep],
                                            data["is_seed"][keep], data["weight"][keep], s, rng,
                                            selector)

    # evaluate on the held-out test split, then save model, metrics and the resolved config
    metrics, test_probs = score(model, tokenizer, cfg.student, cfg.task.labels, test_texts, test_y,
                                with_probs=True, features=pretrained(test_texts, "test") if frozen else None)
    test_in = test_texts
    if s.input == "text+rationale":  # primary metrics on text+rationale, as trained
        rationales, cost = compute_test_rationales(cfg, test_texts, manifest, cache_dir=out_dir)
        test_in = with_rationale(test_texts, rationales, tokenizer)
        text_only = metrics
        metrics, test_probs = score(model, tokenizer, cfg.student, cfg.task.labels, test_in, test_y,
                                    with_probs=True,
                                    features=pretrained(test_in, "test+rationale") if frozen else None)
        metrics = {**metrics, "text_only": text_only, **cost}
    log(f"test accuracy {metrics['accuracy']:.4f} macro_f1 {metrics['macro_f1']:.4f} n {metrics['n']}")
    metrics.update(n_test_rejected=n_rejected, train_on=train_on, train_rows=n,
                   dataset=str(Path(dataset_dir).resolve()) if dataset_dir else None,
                   dataset_version=manifest.get("version"),
                   epochs=epochs, seconds=round(seconds, 3), train_loss=epoch_losses)
    if recipe is not None:
        metrics["recipe"] = recipe
    if head is not None:
        metrics["head"] = head
    if cache_use:
        metrics["embedding_cache"] = cache_use
    if selector is not None:
        metrics["selection"] = selector.summary(cfg.task.labels)
    out = Path(out_dir)
    model.save(out, extra={"student_model": {"name": s.model, "path": str(spec.path),
                                             "sha256": spec.sha256, "source": spec.source},
                           "dataset": metrics["dataset"], "dataset_version": metrics["dataset_version"],
                           "train_on": train_on, "config_digest": cfg.digest(),
                           "recipe": recipe})
    compare = dict(compare or {})
    if train_on == "all" and s.gold_only_baseline and GOLD_ONLY not in compare:
        metrics["baselines"] = {GOLD_ONLY: gold_only_baseline(dataset_dir, cfg, out, metrics)}
        if "accuracy" in metrics["baselines"][GOLD_ONLY]:
            compare.setdefault(GOLD_ONLY, out / GOLD_ONLY)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
    save_standard_model(model, cfg.task.labels, cfg.student.max_length, cfg.model_dump(mode="json"),
                        out, metrics, compare)
    if s.export_onnx:  # OUT/onnx/: one graph that runs without potstill, checked on every test row
        from potstill.models.student import onnx_export

        metrics["export"] = {"onnx": onnx_export.export_checked(model, out, s.max_length, test_in,
                                                                test_probs)}
        log(f"onnx export: {metrics['export']['onnx']}")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


GOLD_ONLY = "gold-only"  # OUT/gold-only/: the baseline every distilled student is shown beside


def gold_only_baseline(dataset_dir: str | Path | None, cfg: Config, out: Path, student: dict) -> dict:
    """Train the gold-only student (the same setup on the seed rows alone, no exports) into
    OUT/gold-only/ and return its headline numbers for `metrics["baselines"]`; say at WARNING when
    the distilled student ends below it. A baseline that cannot be trained (no seed rows, a seed
    weight of 0) is recorded as skipped with the reason: the distilled student stands."""
    s = cfg.student.model_copy(update={"export_onnx": False, "gold_only_baseline": False})
    log(f"gold-only baseline: the same student on the seed rows alone, into {out / GOLD_ONLY}")
    try:
        base = train(dataset_dir, cfg.model_copy(update={"student": s}), out / GOLD_ONLY,
                     train_on="seed")
    except TrainerError as err:
        log(f"gold-only baseline skipped: {err}")
        return {"path": GOLD_ONLY, "skipped": str(err)}
    gain = student["accuracy"] - base["accuracy"]
    summary = {"path": GOLD_ONLY, "accuracy": base["accuracy"], "macro_f1": base["macro_f1"],
               "n": base["n"], "train_rows": base["train_rows"], "accuracy_gain": round(gain, 6)}
    log(f"distilled {student['accuracy']:.4f} vs gold-only {base['accuracy']:.4f} "
        f"({gain:+.4f} accuracy) on {base['n']} test rows")
    if gain < 0:
        logging.getLogger("potstill").warning(
            "the distilled student (accuracy %.4f) ends below the gold-only student (%.4f) on the "
            "test split: %s is the better model for this corpus (docs/student.md, \"When the "
            "gold rows win\")", student["accuracy"], base["accuracy"], out / GOLD_ONLY)
    return summary


def read_metrics(path: str | Path) -> dict:
    p = Path(path)
    p = p / "metrics.json" if p.is_dir() else p
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise TrainerError(f"--compare {path}: cannot read metrics: {err}") from None


def save_standard_model(model: StudentClassifier, labels: list[str], max_length: int, config: dict,
                        out: Path, metrics: dict, compare: dict[str, str | Path]) -> Path | None:
    """OUT/hf/: the student as a standard BertForSequenceClassification (see hf_export);
    `config` is the resolved config the card records."""
    from potstill.models.student import hf_export

    comparisons = {name: read_metrics(path) for name, path in compare.items()}
    card = hf_export.model_card(labels, metrics, comparisons, config, max_length)
    try:
        return hf_export.save_standard(model, out / hf_export.FOLDER, max_length, card)
    except hf_export.ExportError as err:  # e.g. an MPNet student: potstill's folder still works
        log(f"no standard export: {err}")
        return None


def evaluate(model_dir: str | Path, cfg: Config, predictions: str | Path | None = None) -> dict:
    """Metrics of a saved student on the config's test split; `predictions`, when given, is a
    JSONL file to write one {"text", "gold", "predicted", "probs", "probs_by_label"} object per
    test row to: `probs` in the order of task.labels, `probs_by_label` the same numbers named."""
    ensure_offline()
    torch.set_num_threads(cfg.student.threads or os.cpu_count() or 1)
    if not (Path(model_dir) / "student.json").is_file():
        raise TrainerError(f"{model_dir} is not a saved student (no student.json)")
    model, tokenizer = load_student(model_dir)
    if model.labels != list(cfg.task.labels):
        raise TrainerError(f"label mismatch: student {model_dir} has labels {model.labels} "
                           f"but config task.labels is {list(cfg.task.labels)}")
    texts, y, n_rejected = read_test(cfg)
    if cfg.student.input == "text+rationale":  # cached next to the student by `train`
        texts = with_rationale(texts, compute_test_rationales(cfg, texts, cache_dir=model_dir)[0], tokenizer)
    metrics, probs = score(model, tokenizer, cfg.student, cfg.task.labels, texts, y, with_probs=True)
    if predictions is not None:
        labels = cfg.task.labels
        with open(predictions, "w", encoding="utf-8") as fh:
            for text, gold, p in zip(texts, y, probs):
                fh.write(json.dumps({"text": text, "gold": labels[gold],
                                     "predicted": labels[int(p.argmax())],
                                     "probs": [round(float(x), 6) for x in p],
                                     "probs_by_label": {l: round(float(x), 6) for l, x in zip(labels, p)}})
                         + "\n")
    return {**metrics, "n_test_rejected": n_rejected}


def add_compare_argument(parser) -> None:
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH",
                        help="metrics.json (or its folder) to show beside this student in its "
                             "model card, e.g. gold-only=runs/rt/gold-only; repeatable")


def parse_compare(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise TrainerError(f"--compare {item!r}: expected NAME=PATH")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m potstill.models.student.trainer", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="dataset version folder (manifest.json, "
                        "data/); without it, --train-on seed trains on the config's gold rows")
    parser.add_argument("--config", required=True, help="the job's YAML config")
    parser.add_argument("--out", required=True, help="folder for the student, metrics.json, config.json")
    parser.add_argument("--train-on", choices=("all", "seed"), default="all")
    add_compare_argument(parser)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="config override, repeatable")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        metrics = train(args.dataset, cfg, args.out, train_on=args.train_on,
                        compare=parse_compare(args.compare))
    except (TrainerError, ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
