"""The teacher setup search on the gold seed rows, before the pool is labelled.

Candidates are the setups potstill already has: prompt style, few-shot k, verbalizer (the exact
label strings; their case variants summed, since instruct models tend to answer "Business" where
the label is "business"; plain-language alternatives the user gives in
`audit.search.alternatives`, summed with the label's own forms) and contextual calibration on or
off. `teacher.*` settings the config sets explicitly (pydantic's `model_fields_set`) stay fixed.

Cost: the model runs once per prompt setup (style, k) over the seed rows and the content-free
inputs. Every verbalizer shows the label itself first, so the prompt text is the same for all of
them; one pass scores the union of their surface forms, and each verbalizer's label scores are a
log-sum-exp over its own columns. Calibration variants are applied to those scores. Nothing is
fitted on the seed rows (demonstrations are leave-one-out), so each candidate's predictions on
every seed row are out of sample for that candidate.

Choice: the best macro-F1 over all seed rows; ties keep the earlier candidate (the configured
values come first in every grid). Picking the best of many candidates flatters it, so the search
itself is cross-validated too: on each of `audit.folds` folds the best candidate on the other
folds predicts the held-out fold, and those predictions give the tuned teacher's honest figures
(`cv`), the ones the gate judges.

Early stop: a pass with more demonstrations (dearer on every pool row) can only be chosen by
beating the cheaper best by the margin and in `audit.search.cost_confidence` of paired bootstrap
resamples of the seed rows (`_best`). It is scored PRUNE_CHUNK rows at a time, the
classes taken in turn, and stopped once the highest macro-F1 any of its candidates could still
reach (every row left predicted right: `_macro_f1_bound`) does not clear that bar. The choice is
unchanged; the stopped pass's candidates are left out of the CV figures, and listed in `pruned`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.special import logsumexp

from potstill.models.teacher.calibration import Calibration, contextual_prior
from potstill.models.teacher.demos import DemoSelector
from potstill.models.metrics import classification_metrics, paired_bootstrap_macro_f1
from potstill.models.quality.trust import folds_of
from potstill.config.core import Task, Teacher
from potstill.config.quality import Audit, AuditSearch
from potstill.progress import Progress
from potstill.rows.records import Record

log = logging.getLogger(__name__)
SEARCH_CHUNK = 32  # rows per model call in the search: progress moves, each chunk is stored as it is answered
PRUNE_CHUNK = 8    # rows per call in a pass that may stop early (more demonstrations per row)


@dataclass
class Candidate:
    style: str
    k: int
    verbalizer: str                         # exact | cased | alternatives | configured
    forms: dict[str, list[str]] | None      # surface forms per label (None: the label itself)
    calibration: str                        # none | contextual (what decides the arg-max)
    raw: np.ndarray = field(repr=False)     # label log-probs on the seed rows [n, L]
    prior: tuple[float, ...] | None = None  # contextual prior, when calibration is contextual
    macro_f1: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.style}/k={self.k}/{self.verbalizer}/{self.calibration}"

    def logprobs(self) -> np.ndarray:
        return Calibration(self.prior).apply(self.raw)


@dataclass
class SearchResult:
    chosen: Candidate
    candidates: list[Candidate]
    cv_pred: np.ndarray                     # held-out predictions of the search itself
    seconds: float
    prompt_passes: int
    pruned: list = field(default_factory=list)  # [{"pass", "after_rows", "rows", "bound", "to_beat"}]

    def teacher_update(self, t: Teacher) -> dict:
        """The `teacher` settings the search decided (explicitly set ones are unchanged)."""
        c = self.chosen
        calibration = t.calibration if "calibration" in t.model_fields_set else c.calibration
        return {"prompt_style": c.style, "verbalizers": c.forms, "calibration": calibration,
                "few_shot": t.few_shot.model_copy(update={"k": c.k})}


def case_forms(word: str) -> list[str]:
    """word, lowercase, Capitalised, UPPER, Title Case: the answers a model may give."""
    return list(dict.fromkeys([word, word.lower(), word[:1].upper() + word[1:], word.upper(),
                               word.title()]))


def verbalizer_forms(labels: list[str], kind: str, alternatives: dict[str, list[str]]
                     ) -> dict[str, list[str]] | None:
    """Surface forms per label for a verbalizer kind; the label itself is always first, so the
    prompt shows the same answer list for every kind."""
    if kind == "exact":
        return None
    forms = {label: case_forms(label) for label in labels}
    if kind == "alternatives":
        for label in labels:
            for alt in alternatives.get(label, []):
                forms[label] = list(dict.fromkeys(forms[label] + case_forms(alt)))
    return forms


def grid(t: Teacher, s: AuditSearch, task: Task
         ) -> tuple[list[str], list[int], list[tuple[str, dict | None]], list[str]]:
    """(styles, ks, [(verbalizer kind, forms)], calibrations): the configured value first in
    each, a `teacher.*` value the config sets explicitly the only one."""
    fixed = t.model_fields_set
    first = lambda value, options: list(dict.fromkeys([value, *options]))  # noqa: E731
    styles = [t.prompt_style] if "prompt_style" in fixed else first(t.prompt_style, s.prompt_styles)
    k_fixed = "few_shot" in fixed and "k" in t.few_shot.model_fields_set
    ks = [t.few_shot.k] if k_fixed else first(t.few_shot.k, s.few_shot_k)
    labels = task.labels
    if "verbalizers" in fixed or t.verbalizers:
        verbs = [("configured", t.verbalizers)]
    elif task.kind == "multiple_choice":
        verbs = [("exact", None)]
    else:
        kinds = [k for k in s.verbalizers if k != "alternatives" or s.alternatives]
        verbs = [(k, verbalizer_forms(labels, k, s.alternatives)) for k in kinds] or [("exact", None)]
    mode = "contextual" if "contextual" in t.calibration else "none"
    cals = [mode] if "calibration" in fixed else first(mode, s.calibration)
    return styles, ks, verbs, cals


def _union(verbs: list[tuple[str, dict | None]], labels: list[str]) -> dict[str, list[str]]:
    return {l: list(dict.fromkeys([f for _, forms in verbs for f in ((forms or {}).get(l) or [l])]))
            for l in labels}


def _label_scores(cand: np.ndarray, candidates, forms: dict | None, labels: list[str]) -> np.ndarray:
    """Label log-probs of one verbalizer from the union's candidate columns [n, C] -> [n, L]."""
    out = np.full((cand.shape[0], len(labels)), -np.inf)
    for i, label in enumerate(labels):
        wanted = set((forms or {}).get(label) or [label])
        cols = [c for c, (li, surface) in enumerate(candidates) if li == i and surface in wanted]
        out[:, i] = logsumexp(cand[:, cols], axis=1)
    return out


@dataclass
class Pass:
    """One prompt setup (style, k) the search runs the model with, over the seed rows and the
    content-free inputs; `verbs` are the verbalizers read off its candidate columns."""
    style: str
    k: int
    variant: object                         # the TeacherBase behind this prompt
    verbs: list[tuple[str, dict | None]]
    demos: list | None                      # per seed row (k > 0)
    cf_demos: list | None                   # per content-free input (k > 0)


def passes(t: Teacher, s: AuditSearch, task: Task, teacher, seeds: list[Record], embed=None):
    """The prompt passes the search makes, in order (no model call: `teacher` may be a prompter
    without weights, which is how `potstill plan` counts the search's requests)."""
    labels = task.labels
    styles, ks, verbs, _ = grid(t, s, task)
    texts = [r.model_input for r in seeds]
    inputs = list(t.content_free_inputs)
    for style in styles:
        style_verbs = verbs if style == "labels" else [("exact", None)]  # letters are letters
        variant = teacher.variant(style, _union(style_verbs, labels) if style == "labels" else None)
        answers = dict(zip(labels, variant.prompt.verbalizer.answers))
        for k in ks:
            demos = cf_demos = None
            if k:
                selector = DemoSelector(texts, [r.gold_label for r in seeds], answers, k,
                                        t.few_shot.selection, embed, t.few_shot.seed)
                demos, cf_demos = selector.select(texts), selector.select(inputs)
            yield Pass(style, k, variant, style_verbs, demos, cf_demos)


def search(t: Teacher, a: Audit, task: Task, teacher, seeds: list[Record], embed=None,
           store=None) -> SearchResult:
    """Score every candidate setup on the seed rows with the loaded `teacher` (a TeacherBase;
    prompt variants share its weights). `embed` is the demonstration embedder (k > 0, similar).
    With `store` (a LabelledTeacher with a teacher store) raw answers are read from and written
    to the store, and counted on it, like every other teacher request."""
    labels = task.labels
    _, _, _, cals = grid(t, a.search, task)
    texts = [r.model_input for r in seeds]
    gold = np.array([labels.index(r.gold_label) for r in seeds])
    n_options = np.array([len(r.choices) if r.choices else len(labels) for r in seeds])
    past_options = np.arange(len(labels))[None, :] >= n_options[:, None]
    inputs = list(t.content_free_inputs)
    start, n_passes, candidates, pruned = time.perf_counter(), 0, [], []
    planned = list(passes(t, a.search, task, teacher, seeds, embed))
    per_pass = len(texts) + (len(inputs) if "contextual" in cals else 0)
    progress = Progress("setup search", len(planned) * per_pass, unit="prompts")
    rows = np.arange(len(gold))
    margin = max(a.search.cost_margin, 1.0 / max(len(rows), 1)) if a.search.cost_margin else 0.0

    def pass_candidates(p: Pass, seed_cand: np.ndarray, cf_cand: np.ndarray | None,
                        blocked: np.ndarray) -> list[Candidate]:
        out, cand_index = [], p.variant.prompt.verbalizer.candidates
        for kind, forms in p.verbs:
            raw = _label_scores(seed_cand, cand_index, forms, labels)
            raw[blocked] = -np.inf
            for cal in cals:
                prior = (contextual_prior(_label_scores(cf_cand, cand_index, forms, labels))
                         if cal == "contextual" else None)
                out.append(Candidate(p.style, p.k, kind, forms, cal, raw, prior))
        return out

    # A dearer pass (more demonstrations) is scored in small chunks, classes interleaved, and
    # stopped once no candidate of it can still beat the cheaper best by the margin.
    order = _interleaved(gold, a.search.seed)
    for p in planned:
        log.info("setup search: scoring %d seed rows with the %s prompt, k=%d", len(texts), p.style, p.k)
        cf_cand = _candidates(p.variant, inputs, p.cf_demos, store, progress) if "contextual" in cals else None
        n_passes += 1
        if not (candidates and p.k > min(c.k for c in candidates)):
            candidates += pass_candidates(p, _candidates(p.variant, texts, p.demos, store, progress),
                                          cf_cand, past_options)
            continue
        to_beat = _best(candidates, rows, gold, labels, a.search.cost_margin,
                        a.search.cost_confidence, a.search.seed)
        need = _macro_f1(gold, to_beat.logprobs().argmax(1), labels) + margin
        parts, done = [], 0
        chunks = _candidate_chunks(p.variant, [texts[i] for i in order],
                                   [p.demos[i] for i in order] if p.demos else None, store, progress,
                                   PRUNE_CHUNK)
        for part in chunks:
            parts.append(part)
            done = sum(len(x) for x in parts)
            if done == len(texts):
                break
            partial = pass_candidates(p, np.concatenate(parts), cf_cand, past_options[order[:done]])
            bound = max(_macro_f1_bound(gold[order], c.logprobs().argmax(1), labels) for c in partial)
            if bound <= need:  # even with every row left right, none of them is chosen
                progress.update(len(texts) - done)
                pruned.append({"pass": f"{p.style}/k={p.k}", "after_rows": done, "rows": len(texts),
                               "bound": round(bound, 4), "to_beat": round(need, 4)})
                log.info("setup search: %s/k=%d stopped after %d of %d rows: its best can reach "
                         "macro-F1 %.3f at most, not past %.3f (%s + margin)", p.style, p.k, done,
                         len(texts), bound, need, to_beat.name)
                break
        if done == len(texts):
            seed_cand = np.empty_like(np.concatenate(parts))
            seed_cand[order] = np.concatenate(parts)
            candidates += pass_candidates(p, seed_cand, cf_cand, past_options)
    for c in candidates:
        c.macro_f1 = _macro_f1(gold, c.logprobs().argmax(1), labels)
    resolve = (a.search.cost_margin, a.search.cost_confidence, a.search.seed)
    best = _best(candidates, rows, gold, labels, *resolve)
    cv_pred = _cv_predictions(candidates, gold, labels, a.folds, a.search.seed,
                              a.search.cost_margin, a.search.cost_confidence)
    return SearchResult(best, candidates, cv_pred, time.perf_counter() - start, n_passes, pruned)


def _interleaved(gold: np.ndarray, seed: int) -> np.ndarray:
    """Row order for a pass that may stop early: the classes taken in turn (each class's rows
    in a seeded shuffle), so that every prefix looks like the whole."""
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(np.flatnonzero(gold == c))) for c in np.unique(gold)]
    out = []
    while any(queues):
        out += [q.pop(0) for q in queues if q]
    return np.array(out, dtype=int)


def _macro_f1_bound(gold: np.ndarray, partial_pred: np.ndarray, labels: list[str]) -> float:
    """The highest macro-F1 a candidate can still reach when it has predicted the first
    len(partial_pred) rows: every row left predicted right. Per class F1 = 2TP / (2TP + FP + FN)
    only grows when a row is predicted right instead of wrong, so this bounds every ending."""
    return _macro_f1(gold, np.concatenate([partial_pred, gold[len(partial_pred):]]), labels)


def search_requests(t: Teacher, s: AuditSearch, task: Task, prompter, seeds: list[Record],
                    embed=None) -> list[tuple[str, int]]:
    """(store key, prompt tokens) of every request the search makes, in order: what `search`
    with `store=prompter`'s store would look up (a LabelledTeacher, weights not needed)."""
    texts, inputs = [r.model_input for r in seeds], list(t.content_free_inputs)
    contextual = "contextual" in grid(t, s, task)[3]
    out = []
    for p in passes(t, s, task, prompter.teacher, seeds, embed):
        lt = replace(prompter, teacher=p.variant)
        out += lt.request_keys(texts, p.demos or [()] * len(texts))
        if contextual:
            out += lt.request_keys(inputs, p.cf_demos or [()] * len(inputs))
    return out


def _candidates(variant, texts: list[str], demos, store, progress: Progress | None = None,
                chunk: int = SEARCH_CHUNK) -> np.ndarray:
    """Raw candidate log-probs [n, C], through the teacher store when there is one, `chunk`
    rows at a time so that `progress` (rows done, rate, ETA) moves while the model works."""
    parts = list(_candidate_chunks(variant, texts, demos, store, progress, chunk))
    return np.concatenate(parts) if parts else variant.score_candidates(texts, demos)


def _candidate_chunks(variant, texts: list[str], demos, store, progress: Progress | None = None,
                      chunk: int = SEARCH_CHUNK):
    """`_candidates`, one chunk of rows at a time: a caller may stop between chunks."""
    for lo in range(0, len(texts), chunk):
        part, part_demos = texts[lo:lo + chunk], demos[lo:lo + chunk] if demos else None
        if store is None or not store.stores_answers:
            answer = variant.score_candidates(part, part_demos)
        else:
            lt = replace(store, teacher=variant)
            answer = lt.stored_candidates(part, part_demos or [()] * len(part))
            store.calls, store.cache_hits, store.used_keys = lt.calls, lt.cache_hits, lt.used_keys
            store.store_index = lt.store_index  # the next chunk and variant reuse the index
        if progress is not None:
            progress.update(len(part))
        yield answer


def _macro_f1(gold: np.ndarray, pred: np.ndarray, labels: list[str]) -> float:
    return classification_metrics(gold, pred, labels)["macro_f1"] if len(gold) else 0.0


def _best(candidates: list[Candidate], rows: np.ndarray, gold: np.ndarray, labels,
          cost_margin: float = 0.0, confidence: float = 0.0, seed: int = 0) -> Candidate:
    """The best macro-F1 on `rows`, ties keeping the earlier (configured) setup, except that a
    setup with more demonstrations per row (dearer on every pool row) must beat the best cheaper
    one by more than `cost_margin` and one row's worth (1/len(rows)), and (`confidence` > 0) win
    in at least that share of paired bootstrap resamples of `rows` (models/metrics.py): a
    difference the gold rows cannot resolve is not worth k more examples in every prompt."""
    def pick(pool: list[Candidate]) -> tuple[Candidate, float]:
        best, best_f1 = pool[0], -1.0
        for c in pool:  # strictly better only: ties keep the earlier (configured) setup
            f1 = _macro_f1(gold[rows], c.logprobs()[rows].argmax(1), labels)
            if f1 > best_f1 + 1e-12:
                best, best_f1 = c, f1
        return best, best_f1
    margin = max(cost_margin, 1.0 / max(len(rows), 1)) if cost_margin else 0.0
    chosen, chosen_f1 = None, -1.0
    for k in sorted({c.k for c in candidates}):  # cheapest first
        best, f1 = pick([c for c in candidates if c.k == k])
        if chosen is None or (f1 > chosen_f1 + margin and
                              _resolved(chosen, best, rows, gold, len(labels), confidence, seed)):
            chosen, chosen_f1 = best, f1
    return chosen


def _resolved(cheaper: Candidate, dearer: Candidate, rows: np.ndarray, gold: np.ndarray,
              n_labels: int, confidence: float, seed: int) -> bool:
    """Does `dearer` beat `cheaper` on `rows` in at least `confidence` of the paired bootstrap
    resamples (always, with confidence 0)?"""
    if confidence <= 0:
        return True
    gap = paired_bootstrap_macro_f1(gold[rows], cheaper.logprobs()[rows].argmax(1),
                                    dearer.logprobs()[rows].argmax(1), n_labels, seed=seed)
    return float(np.mean(gap > 0)) >= confidence


def _cv_predictions(candidates, gold, labels, folds: int, seed: int,
                    cost_margin: float = 0.0, confidence: float = 0.0) -> np.ndarray:
    assign = folds_of(gold, min(folds, len(gold)), seed)
    pred = np.zeros(len(gold), dtype=int)
    for f in np.unique(assign):
        train, held = np.flatnonzero(assign != f), np.flatnonzero(assign == f)
        pred[held] = _best(candidates, train, gold, labels, cost_margin, confidence,
                           seed).logprobs()[held].argmax(1)
    return pred


def report(result: SearchResult, gold: np.ndarray, labels: list[str]) -> dict:
    """The manifest's `teacher_audit.search`: every candidate's score, the choice, the CV figures."""
    cv = classification_metrics(gold, result.cv_pred, labels)
    return {"chosen": result.chosen.name,
            "criterion": "macro_f1 on the seed rows (ties: configured first; more demonstrations "
                         "only past audit.search.cost_margin, in audit.search.cost_confidence of "
                         "paired bootstrap resamples)",
            "candidates": [{"setup": c.name, "macro_f1": round(c.macro_f1, 4),
                            "accuracy": round(float((c.logprobs().argmax(1) == gold).mean()), 4)}
                           for c in result.candidates],
            "cv": {**cv, "note": "the search itself cross-validated: on each fold, the best setup "
                   "on the other folds predicts it"},
            "seconds": round(result.seconds, 2), "prompt_passes": result.prompt_passes,
            "pruned": result.pruned}
