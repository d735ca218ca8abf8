"""The quality gate: is the (tuned) teacher worth spending the pool on?

Judged on the gold seed rows, on out-of-sample predictions (the setup search's own
cross-validated predictions when it ran). The teacher is weak when
  - its accuracy is no better than always answering the majority gold class, or
  - some class with at least `audit.min_class_support` gold rows has recall below
    `audit.min_class_recall` (the teacher ~never finds it), or
  - (`audit.compare_gold`) its macro-F1 is below that of a classifier trained on the gold rows
    alone, minus `audit.gold_margin`: a logistic regression on `audit.gold_encoder`'s embeddings
    (models/quality/trust.py, its C chosen as the trust recipe chooses it), cross-validated over
    `audit.folds` folds. A cheap stand-in for a fine-tuned gold-only student, which usually does
    a little better: the check is lenient. The margin (default 0.02) is there because both
    figures are estimates from the same few rows: on R8 (40 seed rows) the 1.5B teacher's 0.816
    against the classifier's 0.821 would have stopped a teacher that scores 0.862 macro-F1 on
    the test split where students trained on the gold rows alone reach 0.74-0.79.
`audit.on_weak_teacher` says what follows: fallback (the default: that gold-rows classifier
labels the pool instead, models/quality/fallback.py), stop (raise WeakTeacher before the pool is
labelled), warn (log and label with the LLM anyway) or continue (only the manifest records it).
"""
from __future__ import annotations

import logging

import numpy as np

from potstill.models.metrics import classification_metrics
from potstill.config.quality import Audit, Student

log = logging.getLogger(__name__)


class AuditFailed(ValueError):
    """The teacher is below `audit.min_accuracy` on the gold rows; nothing was labelled."""


class WeakTeacher(AuditFailed):
    """The gate judged the teacher weak and `audit.on_weak_teacher` is stop: a user error (the
    config or the teacher must change), exit code 2."""


def gold_classifier_cv(student: Student, a: Audit, n_labels: int, texts: list[str],
                       gold: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions of the gold-rows classifier on the seed rows: `audit.gold_encoder`'s
    embeddings, C chosen from `student.probe_c`, `audit.folds` folds."""
    from potstill.models.quality.fallback import gold_embedder
    from potstill.models.quality.trust import choose_c

    _, embed = gold_embedder(a, student)
    _, probs, _ = choose_c(embed(texts), gold, n_labels, student.probe_c, a.folds, a.search.seed)
    return probs.argmax(1)


def judge(a: Audit, labels: list[str], gold: np.ndarray, pred: np.ndarray,
          gold_clf_pred: np.ndarray | None = None, source: str = "") -> dict:
    """The verdict, with every number it rests on and its reasons in plain words."""
    n = len(gold)
    m = classification_metrics(gold, pred, labels)
    counts = np.bincount(gold, minlength=len(labels))
    majority = int(counts.argmax())
    majority_share = float(counts[majority]) / n
    reasons = []
    if m["accuracy"] <= majority_share:
        reasons.append(f"accuracy {m['accuracy']:.3f} on the {n} gold rows is no better than always "
                       f"answering the majority class {labels[majority]!r} ({majority_share:.3f})")
    for i, label in enumerate(labels):
        recall = m["per_class_recall"][label]
        if counts[i] >= a.min_class_support and recall is not None and recall < a.min_class_recall:
            found = int(round(recall * counts[i]))
            reasons.append(f"recall on {label!r} is {recall:.2f} ({found} of {counts[i]} gold rows; "
                           f"audit.min_class_recall={a.min_class_recall})")
    verdict = {"weak": False, "judged_on": source or "the seed rows", "n": n,
               "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
               "per_class_recall": m["per_class_recall"],
               "majority_class": labels[majority], "majority_share": majority_share}
    if gold_clf_pred is not None:
        g = classification_metrics(gold, gold_clf_pred, labels)
        verdict["gold_classifier_cv"] = {"accuracy": g["accuracy"], "macro_f1": g["macro_f1"]}
        if m["macro_f1"] < g["macro_f1"] - a.gold_margin:
            reasons.append(f"macro-F1 {m['macro_f1']:.3f} is below the {g['macro_f1']:.3f} that a "
                           "classifier trained on the gold rows alone reaches (cross-validated)")
    verdict.update(weak=bool(reasons), reasons=reasons, action=a.on_weak_teacher if reasons else None)
    return verdict


def enforce(a: Audit, verdict: dict) -> None:
    """Stop, warn or go on, as `audit.on_weak_teacher` says."""
    if not verdict.get("weak"):
        return
    what = "; ".join(verdict["reasons"])
    action = a.on_weak_teacher
    if action == "stop":
        raise WeakTeacher(
            f"the teacher looks weak on the {verdict['n']} gold seed rows: {what}. Stopped before "
            "labelling the pool (audit.on_weak_teacher=stop). Try plain-language answers for opaque "
            "labels (audit.search.alternatives), more gold rows, a stronger teacher.model, or "
            "audit.on_weak_teacher=warn to label the pool anyway.")
    if action == "fallback":
        log.warning("the teacher looks weak on the %d gold seed rows: %s; the gold rows' own "
                    "classifier labels the pool instead (audit.on_weak_teacher=fallback)",
                    verdict["n"], what)
    if action == "warn":
        log.warning("the teacher looks weak on the %d gold seed rows: %s; labelling the pool anyway "
                    "(audit.on_weak_teacher=warn)", verdict["n"], what)
