"""Is a rationale faithful? A deletion test: removing the rationale's k words should lower the
teacher's probability for the explained label more than removing k random words.

Per sampled row (model input x, explained label y, rationale of k words):
  p         = p(y | x)                              (the teacher's calibrated label distribution,
                                                     same prompt and demonstrations as scoring)
  drop_top  = p - p(y | x without the rationale's words)
  drop_rand = p - p(y | x without k words drawn uniformly without replacement, seeded per row)
Reported: mean p, mean drop_top, mean drop_rand, and the share of rows where drop_top > drop_rand
(ties, e.g. both 0, count as not beating). Rows with no more words than the rationale are
skipped (removing everything leaves nothing to compare) and counted. The three variants of a row
keep the demonstrations chosen for the original text, so only the deletion changes the prompt.

Words are the whitespace-separated spans of the text (as in potstill.models.saliency.attribution); a removed word
takes its following whitespace with it. The rationale column holds words, not positions, so they
are located in the text as a subsequence (first match, in text order): with a repeated word the
removed copy may be another instance of the same word.

Where it runs: on the driver, after the Beam stage, over the staged scored rows (before curation;
`manifest_entry`). It runs the teacher in torch whatever `teacher.backend` is (the model the
rationales came from; weights shared with the other stages of the process), 3 teacher
forwards per sampled row. The sample is the `faithfulness_sample` rows with the smallest
sha256(seed:id): stable across runs and runners.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from potstill.models.saliency.attribution import explained_labels
from potstill.models.teacher.teacher_setup import LabelledTeacher, TeacherSetup
from potstill.config.core import Saliency
from potstill.rows.records import model_input


@dataclass
class Case:
    text: str
    without_top: str
    without_random: str
    label: int
    n_options: int


def locate(words: list[str], rationale: list[str]) -> list[int] | None:
    """Positions of the rationale words in `words`, matched in order; None if they do not fit."""
    out, j = [], 0
    for w in rationale:
        while j < len(words) and words[j] != w:
            j += 1
        if j == len(words):
            return None
        out.append(j)
        j += 1
    return out


def without(text: str, drop) -> str:
    """`text` without the words at the `drop` positions (each with its following whitespace)."""
    drop = set(int(i) for i in drop)
    parts = re.findall(r"(\S+)(\s*)", text.strip())
    return "".join(w + sep for i, (w, sep) in enumerate(parts) if i not in drop).strip()


def sample_rows(rows: list[dict], n: int, seed: int) -> list[dict]:
    key = lambda r: hashlib.sha256(f"{seed}:{r['id']}".encode()).hexdigest()
    return sorted(rows, key=key)[:n]


def deletion_cases(rows: list[dict], labels: list[str], seed: int) -> tuple[list[Case], int]:
    """Rows need id, text (the model input), rationale, label (explained) and n_options."""
    cases, skipped = [], 0
    for r in rows:
        words, rationale = r["text"].split(), (r.get("rationale") or "").split()
        where = locate(words, rationale) if rationale else None
        if where is None or len(words) <= len(where):
            skipped += 1
            continue
        rng = np.random.default_rng([seed, int(hashlib.sha256(r["id"].encode()).hexdigest()[:8], 16)])
        random = rng.choice(len(words), size=len(where), replace=False)
        cases.append(Case(r["text"], without(r["text"], where), without(r["text"], random),
                          labels.index(r["label"]), r.get("n_options") or len(labels)))
    return cases, skipped


def summarise(p: np.ndarray, p_top: np.ndarray, p_rand: np.ndarray) -> dict:
    drop_top, drop_rand = p - p_top, p - p_rand
    if not len(p):
        return {"n": 0}
    return {"n": len(p), "mean_p": round(float(p.mean()), 4),
            "mean_drop_topk": round(float(drop_top.mean()), 4),
            "mean_drop_random": round(float(drop_rand.mean()), 4),
            "frac_topk_beats_random": round(float((drop_top > drop_rand).mean()), 4)}


def probabilities(lt: LabelledTeacher, cases: list[Case]) -> np.ndarray:
    """p(y | variant) for [original, without top-k, without random] per case: [n, 3]."""
    demos = lt.demos([c.text for c in cases]) or [()] * len(cases)
    texts = [t for c in cases for t in (c.text, c.without_top, c.without_random)]
    _, logp = lt.score(texts, [c.n_options for c in cases for _ in range(3)],
                       demos=[d for d in demos for _ in range(3)])
    y = np.repeat([c.label for c in cases], 3)
    return np.exp(logp[np.arange(len(texts)), y]).reshape(-1, 3)


def deletion_test(lt: LabelledTeacher, rows: list[dict], seed: int = 0) -> dict:
    cases, skipped = deletion_cases(rows, lt.teacher.labels, seed)
    if not cases:
        return {"n": 0, "skipped": skipped}
    p = probabilities(lt, cases)
    return {**summarise(p[:, 0], p[:, 1], p[:, 2]), "skipped": skipped}


def manifest_entry(setup: TeacherSetup, s: Saliency, scored) -> dict:
    """The manifest's `saliency` entry: settings, coverage and the deletion test on a sample of
    the staged scored rows (a pyarrow Table), with the teacher the rationales came from."""
    entry = {"method": s.method, "top_k": s.top_k, "explain": s.explain,
             **({"ig_steps": s.ig_steps} if s.method == "integrated_gradients" else {}),
             "faithfulness": "deletion test on the driver after the Beam stage (models/saliency/faithfulness.py)"}
    names = [c for c in ("id", "text", "choices", "rationale", "teacher_label", "gold_label")
             if c in scored.column_names]
    rows = [r for r in scored.select(names).to_pylist() if r["rationale"] is not None]
    entry.update(rows_with_rationale=len(rows), rows_without_rationale=scored.num_rows - len(rows))
    if not s.faithfulness_sample or not rows:
        return entry
    sample = sample_rows(rows, s.faithfulness_sample, s.seed)
    for r, label in zip(sample, explained_labels(sample, s.explain)):
        r.update(text=model_input(r["text"], r.get("choices")), label=label,
                 n_options=len(r["choices"]) if r.get("choices") else None)
    lt = setup.load(backend="hf")
    entry["deletion_test"] = {**deletion_test(lt, sample, s.seed), "sample": len(sample), "seed": s.seed}
    return entry
