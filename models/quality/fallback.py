"""The fallback teacher: the gold rows' own classifier, for when the gate judges the LLM weak.

With `audit.on_weak_teacher: fallback` (the default) a teacher the gate finds weak labels
nothing: the pool is labelled by the classifier the gate compared it with, a multinomial
logistic regression (L2) over `audit.gold_encoder`'s unit-length mean-pooled embeddings of the
seed rows, its C the value of `student.probe_c` whose out-of-fold predictions have the lowest
log-loss (models/quality/trust.py `choose_c`, as the trust recipe chooses it), fitted on every
seed row. The user's own gold rows then train the student through the whole pool, and no LLM
call is spent on it.

Pool rows get the fitted classifier's probabilities; seed rows get their out-of-fold ones (the
classifier's honest figures on rows it did not see: what the trainer's trust recipe measures the
"teacher" by). The classifier travels as plain numbers (coefficients, intercepts), never as a
pickled estimator.

With `audit.self_training_rounds` R > 0 the classifier is then refitted R times on the seed rows
plus a sample of the pool it pseudo-labels itself, class-balanced (models/quality/self_training.py);
the seed rows keep round 0's out-of-fold probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from potstill.config.quality import Audit, Student


@dataclass(frozen=True)
class GoldClassifier:
    """Logistic regression over an encoder's unit-length embeddings, as plain numbers."""
    encoder: str                              # the registry name (or folder) of the encoder
    encoder_path: str
    encoder_sha256: str
    max_length: int
    labels: tuple[str, ...]
    classes: tuple[int, ...]                  # the label indices the seed rows hold
    coef: tuple[tuple[float, ...], ...]       # sklearn's coef_: [1, d] for two classes, else [k, d]
    intercept: tuple[float, ...]
    c: float
    oof: dict                                 # seed row id -> out-of-fold probabilities
    log_loss_by_c: dict
    self_training: dict = field(default_factory=dict)  # what the rounds did (empty: none asked)
    # pool texts the driver already labelled (embed_cache.text_key of the model input ->
    # probabilities): the graph does not embed them again
    pool_probs: dict = field(default_factory=dict, repr=False)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities [n, len(labels)] for unit-length embeddings [n, d] (labels no seed row
        holds get 0), as sklearn's predict_proba computes them."""
        n = len(self.labels)
        out = np.zeros((len(x), n))
        if len(self.classes) == 1:
            out[:, self.classes[0]] = 1.0
            return out
        z = np.asarray(x, dtype=np.float64) @ np.asarray(self.coef).T + np.asarray(self.intercept)
        if len(self.classes) == 2:  # one logit: p(second class) = sigmoid
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
            probs = np.stack([1.0 - p1, p1], axis=1)
        else:
            z = z - z.max(axis=1, keepdims=True)
            probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        out[:, list(self.classes)] = probs
        return out

    def summary(self) -> dict:
        """What the manifest, the card and the report say about it."""
        return {"encoder": self.encoder, "encoder_sha256": self.encoder_sha256, "c": self.c,
                "log_loss_by_c": self.log_loss_by_c, "seed_rows": len(self.oof),
                "classes_seen": [self.labels[i] for i in self.classes],
                **({"self_training": self.self_training} if self.self_training else {})}


def gold_embedder(a: Audit, student: Student):
    """(the resolved `audit.gold_encoder`, its embedder shared per process)."""
    from potstill.models.embed import Embedder
    from potstill.models.loading import shared
    from potstill.models.registry import resolve_model

    spec = resolve_model(a.gold_encoder)
    return spec, shared(("embedder", spec.path, student.max_length),
                        lambda: Embedder(spec.path, max_length=student.max_length))


def coefficients(x: np.ndarray, y: np.ndarray, c: float, weight: np.ndarray | None = None) -> dict:
    """The GoldClassifier fields {classes, coef, intercept} of a logistic regression with this C
    (row weights optional) on unit-length embeddings `x` with label indices `y`."""
    from sklearn.linear_model import LogisticRegression

    present = tuple(int(i) for i in np.unique(y))
    if len(present) < 2:
        return {"classes": present, "coef": (), "intercept": ()}
    model = LogisticRegression(C=c, max_iter=2000).fit(x, y, sample_weight=weight)
    return {"classes": present, "coef": tuple(tuple(map(float, row)) for row in model.coef_),
            "intercept": tuple(map(float, model.intercept_))}


def from_arrays(x: np.ndarray, y: np.ndarray, labels, c: float, oof: dict | None = None,
                log_loss_by_c: dict | None = None, encoder: tuple = ("", "", "", 0)) -> GoldClassifier:
    """The classifier fitted with C=`c` on embeddings `x` and label indices `y`; `encoder`:
    (name, path, sha256, max_length)."""
    return GoldClassifier(*encoder, tuple(labels), **coefficients(x, y, c), c=float(c),
                          oof=oof or {}, log_loss_by_c=log_loss_by_c or {})


def fit(a: Audit, student: Student, labels: list[str], seeds) -> GoldClassifier:
    """The fallback classifier from the seed records (`Record`s with gold labels)."""
    return fit_with_embeddings(a, student, labels, seeds)[0]


def fit_with_embeddings(a: Audit, student: Student, labels: list[str], seeds):
    """(`fit`'s classifier, the seed rows' unit-length embeddings, their label indices, the
    embedder): what self-training goes on from (models/quality/self_training.py)."""
    from potstill.models.quality.trust import choose_c

    spec, embed = gold_embedder(a, student)
    x = embed([r.model_input for r in seeds])
    y = np.array([labels.index(r.gold_label) for r in seeds])
    c, oof, losses = choose_c(x, y, len(labels), student.probe_c, a.folds, a.search.seed)
    clf = from_arrays(x, y, labels, c, {r.id: tuple(map(float, p)) for r, p in zip(seeds, oof)},
                      {str(k): v for k, v in losses.items()},
                      (a.gold_encoder, spec.path, spec.sha256, student.max_length))
    return clf, x, y, embed


def manifest_entry(clf: GoldClassifier, gate: dict) -> dict:
    """The manifest's `labelled_by`: which teacher labelled the rows, and why."""
    return {"teacher": "gold_classifier", **clf.summary(),
            "why": f"the LLM teacher was judged weak on {gate.get('judged_on') or 'the gold rows'} "
                   "(audit.on_weak_teacher=fallback): " + "; ".join(gate.get("reasons", [])),
            "gate": {k: gate.get(k) for k in ("n", "accuracy", "macro_f1", "gold_classifier_cv",
                                              "judged_on")}}
