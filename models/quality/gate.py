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
    a little better: the check is lenient. Both figures are estimates from the same few rows, so
    the classifier must win by more than `audit.gold_margin` (default 0.02) and win in at least
    `audit.gold_confidence` (default 0.8) of 2,000 paired bootstrap resamples of the seed rows
    (models/metrics.py): a gap that one or two rows could close does not decide. On R8 (40 seed
    rows) the 1.5B teacher's 0.816 against the classifier's 0.821 would otherwise have stopped a
    teacher that scores 0.862 macro-F1 on the test split where students trained on the gold rows
    alone reach 0.74-0.79; on a Rotten Tomatoes draw (32 seed rows) the 0.5B's 0.749 against
    0.781 (one row) sent the pool to the classifier, and the student ended 6 points below the
    one trained on the LLM's labels (docs/measurements/student-training.md). A tie goes to the
    LLM because the trainer's trust recipe mixes its labels with this very classifier's.
`audit.on_weak_teacher` says what follows: fallback (the default: that gold-rows classifier
labels the pool instead, models/quality/fallback.py), stop (raise WeakTeacher before the pool is
labelled), warn (log and label with the LLM anyway) or continue (only the manifest records it).
"""
from __future__ import annotations

import logging

import numpy as np

from potstill.models.metrics import BOOTSTRAP_RESAMPLES, classification_metrics, paired_bootstrap_macro_f1
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
        gap = paired_bootstrap_macro_f1(gold, pred, gold_clf_pred, len(labels),
                                        BOOTSTRAP_RESAMPLES, a.search.seed)
        wins = float(np.mean(gap > 0))
        verdict["gold_classifier_cv"] = {
            "accuracy": g["accuracy"], "macro_f1": g["macro_f1"],
            "wins_in_resamples": wins, "resamples": BOOTSTRAP_RESAMPLES,
            "gap_interval_90": [float(v) for v in np.quantile(gap, [0.05, 0.95])]}
        behind = m["macro_f1"] < g["macro_f1"] - a.gold_margin
        if behind and wins >= a.gold_confidence:
            reasons.append(f"macro-F1 {m['macro_f1']:.3f} is below the {g['macro_f1']:.3f} that a "
                           "classifier trained on the gold rows alone reaches (cross-validated; "
                           f"ahead in {wins:.0%} of {BOOTSTRAP_RESAMPLES} paired bootstrap "
                           f"resamples of the {n} rows)")
        elif behind:
            verdict["undecided"] = (
                f"the gold rows' classifier scores macro-F1 {g['macro_f1']:.3f} against the "
                f"teacher's {m['macro_f1']:.3f}, but is ahead in only {wins:.0%} of "
                f"{BOOTSTRAP_RESAMPLES} paired bootstrap resamples of the {n} gold rows "
                f"(audit.gold_confidence={a.gold_confidence:g}): too few rows to tell them "
                "apart, so the LLM labels the pool and the trainer's trust recipe weighs it "
                "against that classifier")
            log.info("%s", verdict["undecided"])
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
