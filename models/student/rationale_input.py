"""What the student reads with `student.input: text+rationale` (saliency rationales, arXiv 2409.12586).

Input: `text + " " + sep + " " + rationale`, where sep is the student tokenizer's own separator
token (`[SEP]` for MiniLM, so the encoder sees a real segment boundary) or the literal "[SEP]"
when the tokenizer has none. A row whose rationale is null (the stage failed on it) reads its
text alone. The rationale comes after the text, so when text + rationale exceed
`student.max_length` the rationale is cut first (Rotten Tomatoes reviews fit: ~30-60 tokens).

Evaluation. Test rows are never published, so they carry no rationale. The trainer computes them
at evaluation time with the teacher, set up as the pipeline had it (model, prompt, demonstrations,
the calibration from the dataset's manifest, the `saliency` method and top_k), explaining the
TEACHER's label (the gold label is never looked at). The primary metrics are on text+rationale,
matching training; `text_only` metrics score the same student on the bare text, which is what it
gets when deployed without the teacher. Cost: loading the teacher plus one attribution per test
row (see benchmarks/saliency_cost.py: several teacher forwards per row, far more for IG), paid
once per trained student; the rationales are cached in the student's folder
(`test_rationales.json`, keyed by the sha256 of the model input) and reused by `evaluate`.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

CACHE_FILE = "test_rationales.json"


def separator(tokenizer) -> str:
    return f" {getattr(tokenizer, 'sep_token', None) or '[SEP]'} "


def with_rationale(texts: list[str], rationales: list[str | None] | None, tokenizer) -> list[str]:
    sep = separator(tokenizer)
    rationales = rationales or [None] * len(texts)
    return [f"{t}{sep}{r}" if r else t for t, r in zip(texts, rationales)]


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compute_test_rationales(cfg, texts: list[str], manifest: dict | None = None,
                    cache_dir: str | Path | None = None) -> tuple[list[str], dict]:
    """Rationales for the test model inputs (cached under cache_dir), and what it cost."""
    cache_path = Path(cache_dir) / CACHE_FILE if cache_dir else None
    cached = json.loads(cache_path.read_text()) if cache_path and cache_path.is_file() else {}
    missing = [t for t in dict.fromkeys(texts) if _key(t) not in cached]
    info = {"test_rationales": "computed with the teacher at evaluation time (teacher's label)",
            "test_rationale_rows": len(missing), "test_rationale_seconds": 0.0}
    if missing:
        from potstill.models.saliency.attribution import Explainer
        from potstill.models.quality.audit import build_teacher, read_seed
        from potstill.models.teacher.calibration import Calibration
        from potstill.models.registry import resolve_model

        start = time.perf_counter()
        fitted = ((manifest or {}).get("teacher_audit") or {}).get("calibration") or {}
        lt = build_teacher(cfg, resolve_model(cfg.teacher.model).path, read_seed(cfg),
                           Calibration(**fitted), backend="hf")
        explainer = Explainer.configured(lt, cfg.saliency)
        _, logp = lt.score(missing)
        labels = [lt.teacher.labels[i] for i in logp.argmax(1)]
        for text, e in zip(missing, explainer.explain(missing, labels)):
            cached[_key(text)] = e.rationale
        info["test_rationale_seconds"] = round(time.perf_counter() - start, 2)
        if cache_path:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(cached))
    return [cached[_key(t)] for t in texts], info
