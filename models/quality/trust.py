"""How much to trust the teacher, decided from the gold seed rows, and what to learn instead.

The gold classifier G: a multinomial logistic regression (L2) over the student's pretrained
encoder embeddings (mean pooled, L2-normalised) of the seed rows: what the gold rows alone
teach, at the cost of one encoder pass. Its out-of-fold predictions on the seed rows
(`student.probe_folds` stratified folds) measure it. Its inverse L2 strength C is the value of
`student.probe_c` whose out-of-fold predictions have the lowest log-loss,
    C = argmin_C  -1/n sum_j log q_C^(-fold(j))(y_j | x_j),
because its distribution, not only its arg-max, becomes part of the targets: a C too small
gives a classifier that is right on most rows yet nearly uniform (R8, 40 seed rows, C = 1: the
right class on 90% of the pool rows with a mean top probability of 0.24 over 8 classes), and
mixing that in flattens the student's targets. The teacher T is measured by the
arg-max of its label_probs on the seed rows (it never trained on them; demonstrations are
leave-one-out).

Per source s in {T, G} and class c, with n seed rows, G_c of them gold c, P_s,c predicted c by s,
TP_s,c of those right, and a = `student.trust_strength` pseudo-rows:
    base_c   = G_c / n                                   chance of c
    prec_s,c = (TP_s,c + a * base_c) / (P_s,c + a)       precision of "c", shrunk toward chance
    lift_s,c = clip((prec_s,c - base_c) / (1 - base_c), 0, 1)
lift is how far s's claim "c" moves you from chance toward certainty: 0 for a claim that says
nothing (a teacher that always answers c, or is never right when it says c), 1 for a claim
that is always right; rare claims are pulled toward 0 by the pseudo-rows.

Per pool row i, with teacher distribution p_i (claim t_i = argmax p_i) and gold classifier
distribution q_i (claim g_i = argmax q_i; G fitted on all seed rows):
    tau_i    = lift_T,t_i / (lift_T,t_i + lift_G,g_i)    (1/2 when both lifts are 0)
    target_i = tau_i * p_i + (1 - tau_i) * q_i
So a teacher is followed where its claim carries more information than the gold rows' own, and
the gold rows' classifier is followed where it does not. That ratio (`student.trust_pooling:
ratio`) mixes even when the seed rows leave little doubt which source is better (a teacher right
on 14 of 16 claims against a classifier right on 13 of 22 still gives the classifier a quarter
of the weight), which softens a strong teacher's targets. The default,
`student.trust_pooling: superiority`, weighs by how sure the seed rows are instead:
    prec_s,c ~ Beta(TP_s,c + a * base_c, P_s,c - TP_s,c + a * (1 - base_c))
               (the posterior of the precision under a prior of mean base_c worth a rows; its
                mean is prec_s,c above), L_s,c = clip((prec_s,c - base_c) / (1 - base_c), 0, 1)
    tau(t, g) = Pr(L_T,t > L_G,g) + Pr(L_T,t = L_G,g) / 2     (T and G independent)
    target_i  = tau(t_i, g_i) * p_i + (1 - tau(t_i, g_i)) * q_i
estimated from `TRUST_DRAWS` paired draws (fixed seed: the same rows give the same targets). A
class absent from the seed rows (base_c = 0) or the only one (base_c = 1) has L = 0 for both.
"""
from __future__ import annotations

import numpy as np

from potstill.models.metrics import classification_metrics

TRUST_DRAWS = 4000


def folds_of(gold: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per row, stratified: each label's rows are shuffled and dealt in turn."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(gold), dtype=int)
    offset = 0
    for label in np.unique(gold):
        rows = rng.permutation(np.flatnonzero(gold == label))
        out[rows] = (np.arange(len(rows)) + offset) % folds
        offset += len(rows)
    return out


def fit_gold_classifier(x: np.ndarray, y: np.ndarray, n_labels: int, c: float):
    """A function embeddings -> probabilities [m, n_labels] (labels the rows lack get 0)."""
    present = np.unique(y)
    if len(present) == 1:
        return lambda z: np.tile(np.eye(n_labels)[present[0]], (len(z), 1))
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=2000).fit(x, y)

    def predict(z: np.ndarray) -> np.ndarray:
        out = np.zeros((len(z), n_labels))
        out[:, model.classes_] = model.predict_proba(z)
        return out
    return predict


def out_of_fold(x: np.ndarray, y: np.ndarray, n_labels: int, folds: int, c: float,
                seed: int = 0) -> np.ndarray:
    """The gold classifier's probabilities for each seed row from a model that did not see it."""
    assign = folds_of(y, min(folds, len(y)), seed)
    out = np.zeros((len(y), n_labels))
    for f in np.unique(assign):
        held = assign == f
        out[held] = fit_gold_classifier(x[~held], y[~held], n_labels, c)(x[held])
    return out


def choose_c(x: np.ndarray, y: np.ndarray, n_labels: int, grid: float | list[float], folds: int,
             seed: int = 0) -> tuple[float, np.ndarray, dict]:
    """(C, its out-of-fold probabilities, the log-loss of every C): the C of `grid` whose
    out-of-fold predictions have the lowest log-loss (ties: the smallest C, the simpler model)."""
    best, losses = None, {}
    for c in sorted(grid if isinstance(grid, (list, tuple)) else [grid]):
        oof = out_of_fold(x, y, n_labels, folds, c, seed)
        loss = float(-np.log(np.clip(oof[np.arange(len(y)), y], 1e-12, None)).mean())
        losses[c] = round(loss, 4)
        if best is None or loss < best[0] - 1e-9:
            best = (loss, c, oof)
    return best[1], best[2], losses


def lifts(gold: np.ndarray, pred: np.ndarray, n_labels: int, strength: float) -> tuple[np.ndarray, dict]:
    """lift_c per class (module docstring) and the counts behind it."""
    n = len(gold)
    out, table = np.zeros(n_labels), {}
    for c in range(n_labels):
        base = float((gold == c).sum()) / n if n else 0.0
        said = pred == c
        tp, p = int((said & (gold == c)).sum()), int(said.sum())
        prec = (tp + strength * base) / (p + strength)
        out[c] = float(np.clip((prec - base) / (1 - base), 0, 1)) if base < 1 else 0.0
        table[c] = {"gold_rows": int((gold == c).sum()), "claimed": p, "right": tp,
                    "precision_shrunk": round(prec, 4), "lift": round(float(out[c]), 4)}
    return out, table


def mix(teacher: np.ndarray, gold_clf: np.ndarray, lift_t: np.ndarray, lift_g: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
    """(targets [m, L], tau [m]) per the module docstring."""
    lt = lift_t[teacher.argmax(1)]
    lg = lift_g[gold_clf.argmax(1)]
    total = lt + lg
    tau = np.where(total > 0, lt / np.where(total > 0, total, 1), 0.5)
    return tau[:, None] * teacher + (1 - tau[:, None]) * gold_clf, tau


def lift_draws(gold: np.ndarray, pred: np.ndarray, n_labels: int, strength: float,
               rng: np.random.Generator, draws: int = TRUST_DRAWS) -> np.ndarray:
    """[n_labels, draws] samples of L_c from the posterior of each claim's precision (module
    docstring, superiority)."""
    n = len(gold)
    out = np.zeros((n_labels, draws))
    for c in range(n_labels):
        base = float((gold == c).sum()) / n if n else 0.0
        if not 0 < base < 1:
            continue
        said = pred == c
        tp, p = int((said & (gold == c)).sum()), int(said.sum())
        prec = rng.beta(tp + strength * base, p - tp + strength * (1 - base), draws)
        out[c] = np.clip((prec - base) / (1 - base), 0, 1)
    return out


def superiority(draws_t: np.ndarray, draws_g: np.ndarray) -> np.ndarray:
    """tau[t, g] = Pr(L_T,t > L_G,g) + Pr(L_T,t = L_G,g) / 2 over paired draws."""
    t, g = draws_t[:, None, :], draws_g[None, :, :]
    return (t > g).mean(-1) + 0.5 * (t == g).mean(-1)


def mix_by_claims(teacher: np.ndarray, gold_clf: np.ndarray, tau: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(targets, tau per row) with tau looked up by (teacher claim, classifier claim)."""
    row_tau = tau[teacher.argmax(1), gold_clf.argmax(1)] if len(teacher) else np.zeros(0)
    return row_tau[:, None] * teacher + (1 - row_tau[:, None]) * gold_clf, row_tau


def decide(seed_x: np.ndarray, seed_y: np.ndarray, seed_teacher: np.ndarray, pool_x: np.ndarray,
           pool_teacher: np.ndarray, labels: list[str], strength: float, c_grid: float | list[float],
           folds: int, seed: int = 0, pooling: str = "superiority") -> tuple[np.ndarray, dict]:
    """Mixed targets for the pool rows and the record of what was decided and why."""
    k = len(labels)
    c, oof, c_losses = choose_c(seed_x, seed_y, k, c_grid, folds, seed)
    lift_t, table_t = lifts(seed_y, seed_teacher.argmax(1), k, strength)
    lift_g, table_g = lifts(seed_y, oof.argmax(1), k, strength)
    gold_clf = fit_gold_classifier(seed_x, seed_y, k, c)(pool_x) if len(pool_x) else np.zeros((0, k))
    tau_by_claims = None
    if pooling == "superiority":
        rng = np.random.default_rng(seed)
        tau_by_claims = superiority(lift_draws(seed_y, seed_teacher.argmax(1), k, strength, rng),
                                    lift_draws(seed_y, oof.argmax(1), k, strength, rng))
        targets, tau = mix_by_claims(pool_teacher, gold_clf, tau_by_claims)
    else:
        targets, tau = mix(pool_teacher, gold_clf, lift_t, lift_g)
    flipped = float((targets.argmax(1) != pool_teacher.argmax(1)).mean()) if len(tau) else 0.0
    teacher_m = classification_metrics(seed_y, seed_teacher.argmax(1), labels)
    gold_m = classification_metrics(seed_y, oof.argmax(1), labels)
    report = {
        "recipe": "trust",
        "pooling": pooling,
        "seed_rows": int(len(seed_y)),
        "teacher_on_seeds": {"accuracy": teacher_m["accuracy"], "macro_f1": teacher_m["macro_f1"]},
        "gold_classifier_cv": {"accuracy": gold_m["accuracy"], "macro_f1": gold_m["macro_f1"],
                               "folds": int(min(folds, len(seed_y))), "c": c,
                               "log_loss_by_c": {str(g): v for g, v in c_losses.items()}},
        "per_class": {labels[i]: {"teacher": table_t[i], "gold_classifier": table_g[i]} for i in range(k)},
        "pool_rows": int(len(tau)),
        "mean_teacher_weight": round(float(tau.mean()), 4) if len(tau) else None,
        "share_relabelled": round(flipped, 4),
        "why": _why(labels, lift_t, lift_g),
    }
    if tau_by_claims is not None:  # teacher claim -> classifier claim -> teacher weight
        report["teacher_weight_by_claims"] = {
            labels[t]: {labels[g]: round(float(tau_by_claims[t, g]), 4) for g in range(k)}
            for t in range(k)}
    return targets, report


def _why(labels: list[str], lift_t: np.ndarray, lift_g: np.ndarray) -> str:
    trusted = [l for l, a, b in zip(labels, lift_t, lift_g) if a > b]
    doubted = [l for l, a, b in zip(labels, lift_t, lift_g) if a <= b]
    parts = []
    if trusted:
        parts.append(f"the teacher's claims carry more information than the gold rows' classifier "
                     f"for {trusted}")
    if doubted:
        parts.append(f"the gold rows' classifier is at least as informative for {doubted}, so its "
                     "distribution weighs more on rows the teacher labels so")
    return "; ".join(parts)
