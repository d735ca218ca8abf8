"""`potstill plan CONFIG [--set ...] [--sample N] [--out FILE]`: what a run will do and cost,
without calling the teacher on the pool.

It reads and validates every split and deduplicates exactly as the graph does (the same
`Record`s, `potstill.transforms.dedup.choose` and the test-leak guard), each file in one pass over its
bytes that also hashes it for the fingerprint (`records.read_file`), encodes every row's teacher
request with the teacher's tokenizer and prompt (`TeacherSetup.prompter()`: no weights), looks
each request key up in the teacher store (potstill/store.py) and applies the budget. What it
reports:
  rows             per split: read, rejected and filtered by reason, unique rows left
  teacher.calls    rows the graph will send to the model: unique rows whose answer the store
                   lacks (with a budget: at most budget.teacher_calls pool rows, plus seed rows)
  teacher.store_hits, teacher.prompt_tokens (of those calls, counted with its tokenizer),
  teacher.stored, teacher.from_audit  the store hits split: answers already in the store before
                   the run, and gold rows whose answers the audit's own calls store first (it
                   compares them with the gold labels); with no store yet, stored is 0
  teacher.pool_cost_by_setup  the pool calls' prompt tokens under each few-shot k the setup
                   search may choose (k demonstrations ride in every pool row's prompt),
  audit.calls      requests the audit sends in-process first, through the store: the setup
                   search's prompt passes (models/quality/tuning.py, every (style, k) over the seed
                   rows and content-free inputs) when it runs, else the configured prompt's.
                   teacher.* counts the configured setup; a different chosen setup changes
                   the seed rows' and pool rows' prompts, not how many are sent.
  estimate         seconds, from timing `--sample N` rows on the loaded teacher (0: no sample)
  cost             a remote teacher (backend openai): requests, prompt and completion tokens
                   of those calls, and USD with teacher.endpoint.price_per_million (null
                   for in-process backends)
  prompt           one rendered prompt, and whether an identical version already exists.
Generated rows cannot be planned without running the generator: with generation on, the
plan says so and counts at most `per_label x labels` more teacher calls.
`run --max-teacher-calls N` refuses to start when teacher.calls + audit.calls exceeds N.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from potstill.models.teacher.backends import open_store
from potstill.models.registry import ensure_offline, resolve_model
from potstill.models.teacher.requests import encode_request
from potstill.models.teacher.teacher_setup import TeacherSetup
from potstill.publish import curation
from potstill import job
from potstill.rows import records
from potstill.config.core import Config
from potstill.rows.records import Bounds, expand, read_file
from potstill.transforms.dedup import choose

log = logging.getLogger(__name__)


def read_rows(cfg: Config) -> tuple[dict, dict, dict]:
    """(records per split, rejections per split, file digests per corpus split), read and
    validated as the graph reads them; each file is hashed by the same pass that parses it
    (`records.read_file`). The files were checked as a whole first (`check_input_files`)."""
    labels, bounds = cfg.task.labels, Bounds(cfg.records.min_chars, cfg.records.max_chars)
    out, rejected, digests = {}, {}, {}
    for split, source in (("unlabeled", "corpus"), ("seed", "seed"), ("test", "test")):
        src = getattr(cfg.corpus, split)
        if src is None:
            continue
        label_field = None if split == "unlabeled" else src.label_field
        out[source], rejected[source], digests[split] = [], [], []
        for file in expand(src.path):
            got, bad, digest = read_file(
                file, source=source, text_field=src.text_field, label_field=label_field,
                labels=labels, bounds=bounds, choices_field=src.choices_field,
                encoding=src.encoding)
            out[source] += got
            rejected[source] += bad
            digests[split].append(digest)
    return out, rejected, digests


def dedup(rows: dict) -> tuple[list, Counter]:
    """The unique training rows and the filtered counts, as transforms/dedup.py decides."""
    test_ids = {r.id for r in rows.get("test", [])}
    groups: dict[str, list] = {}
    for source in ("corpus", "seed"):
        for r in rows.get(source, []):
            groups.setdefault(r.id, []).append(r)
    unique, filtered = [], Counter()
    for group in groups.values():
        keep, dups = choose(group)
        filtered["duplicate"] += len(dups)
        if keep.id in test_ids:
            filtered["test_overlap"] += 1
        else:
            unique.append(keep)
    return unique, filtered


def make_plan(cfg: Config, sample: int | None = None) -> dict:
    ensure_offline()
    curation.check_settings(cfg.curation)
    records.check_input_files(cfg)
    models = {role: resolve_model(name) for role, name in job.model_roles(cfg).items()}
    if cfg.teacher.backend == "openai":  # checked and resolved as `run` does (store keys)
        from potstill.models.teacher.remote_endpoint import resolved_config

        cfg = resolved_config(cfg, models["teacher"].path)
    rows, rejected, digests = read_rows(cfg)  # one pass over each file: rows and its hash
    fingerprint_plan = job.plan(cfg, models, digests)
    existing = job.existing_version(cfg, fingerprint_plan)
    teacher = models["teacher"]
    teacher_store = open_store(cfg.output_root, cfg.teacher, teacher.sha256)

    unique, filtered = dedup(rows)
    seeds = [r for r in unique if r.source == "seed"]
    setup = TeacherSetup.from_config(cfg, teacher.path, rows.get("seed", []), store=teacher_store)
    lt = setup.prompter()
    requests = {r.id: encode_request(lt, r.model_input) for r in unique}
    # The audit runs first, in-process, through the same store: its answers (the seed rows,
    # and content-free inputs for contextual calibration) are hits for the graph afterwards.
    audit_requests = audit_keys(cfg, lt, rows.get("seed", []))
    # what past runs left, of what this run asks
    stored = teacher_store.answered({q.key for q in requests.values()} | {k for k, _ in audit_requests})
    audit_sent = {k: n for k, n in audit_requests if k not in stored}
    known = stored | {k for k, _ in audit_requests}
    missing = [r for r in unique if requests[r.id].key not in known]
    pool_missing = [r for r in missing if r.source != "seed"]
    seed_missing = [r for r in missing if r.source == "seed"]
    b = cfg.budget
    if b.teacher_calls is not None:  # pool rows beyond the budget never reach the teacher
        over = max(0, len([r for r in unique if r.source != "seed"]) - b.teacher_calls)
        filtered["over_budget"] += over
        pool_missing = pool_missing[:b.teacher_calls]  # at most; which ones the rounds decide
    sent = seed_missing + pool_missing
    calls = len(sent)
    tokens = sum(requests[r.id].prompt_tokens for r in sent)
    generated_max = cfg.generation.per_label * len(cfg.task.labels) if cfg.generation.enabled else 0

    first = unique[0] if unique else None
    prompt = lt.teacher.tokenizer.decode(lt.teacher.prompt_ids(requests[first.id].encoded)) \
        if first else None
    audit_calls = len(audit_sent)
    sample = 2 * cfg.teacher.batch_size if sample is None else sample
    estimate = timed_sample(setup, [r for r in unique if r.source != "seed"][:sample], calls + audit_calls) \
        if sample and unique else {"note": "no timed sample (--sample 0)"}

    def split_rows(source):
        return {"read": len(rows.get(source, [])) + len(rejected.get(source, [])),
                "rejected": dict(sorted(Counter(x.reason for x in rejected.get(source, [])).items())),
                "valid": len(rows.get(source, []))}

    by_setup = pool_cost_by_k(cfg, lt, rows.get("seed", []), [r for r in sent if r.source != "seed"])
    warnings = same_file_warnings(cfg) + split_warnings(cfg, rows, rejected) + plan_warnings(
        cfg, len(seeds), len(unique) - len(seeds), rejected.get("seed", []),
        valid_seed=len(rows.get("seed", [])))
    for line in warnings:
        log.warning("%s", line)
    return {
        "dataset": cfg.dataset, "fingerprint": fingerprint_plan.fingerprint,
        "warnings": warnings,
        "existing_version": str(existing) if existing else None,
        "rows": {**{s: split_rows(s) for s in rows}, "filtered": dict(sorted(filtered.items())),
                 "unique": {"seed": len(seeds), "corpus": len(unique) - len(seeds)}},
        "teacher": {"model": teacher.name, "sha256": teacher.sha256, "calls": calls,
                    "store_hits": len(unique) - len(missing), "prompt_tokens": tokens,
                    "stored": sum(requests[r.id].key in stored for r in unique),
                    "from_audit": sum(requests[r.id].key in known - stored for r in unique),
                    "budget": b.teacher_calls, "generated_max": generated_max,
                    "pool_cost_by_setup": by_setup,
                    **({"note": "generation is on: up to generated_max more calls, not planned"}
                       if generated_max else {})},
        "audit": {"calls": audit_calls, "store_hits": len(set(dict(audit_requests))) - audit_calls,
                  "prompt_tokens": sum(audit_sent.values()),
                  "note": "the audit's requests (the setup search's passes when it runs), "
                          "in-process first"},
        "estimate": estimate,
        "cost": remote_cost(cfg, lt, [requests[r.id].prompt_tokens for r in sent] +
                            list(audit_sent.values())),
        "prompt": prompt,
    }


def same_file_warnings(cfg: Config) -> list[str]:
    """Splits that read the same file (from the config alone: `run` says it too): a pool read
    from the gold or test file is all duplicates or test overlap, and gold rows read from the
    test file leave nothing held out."""
    files = {split: set(expand(src.path)) for split in ("unlabeled", "seed", "test")
             if (src := getattr(cfg.corpus, split)) is not None}
    what = {("unlabeled", "seed"): "every pool row read from it is a copy of a gold row and is "
                                   "filtered as a duplicate before the teacher",
            ("unlabeled", "test"): "every pool row read from it is also a test row and is filtered "
                                   "(test_overlap)",
            ("seed", "test"): "every gold row read from it is also a test row: filtered from "
                              "training (test_overlap), and the test split measures nothing held out"}
    out = []
    for (a, b), consequence in what.items():
        same = sorted(files.get(a, set()) & files.get(b, set()))
        if same:
            out.append(f"corpus.{a} and corpus.{b} read the same file ({', '.join(same[:3])}"
                       f"{', ...' if len(same) > 3 else ''}): {consequence}; point them at different "
                       "files (`potstill init` splits one labelled file into seed, test and an "
                       "unlabeled pool)")
    return out


def split_warnings(cfg: Config, rows: dict, rejected: dict) -> list[str]:
    """A configured split with no usable row: an empty file, or every row rejected."""
    what = {"corpus": ("unlabeled", "the teacher has nothing to label"),
            "seed": ("seed", "the teacher is neither tuned nor judged, and the student has no gold rows"),
            "test": ("test", "`potstill evaluate` and the student's test metrics have no row to score")}
    out = []
    for source, (split, consequence) in what.items():
        if getattr(cfg.corpus, split) is None or rows.get(source):
            continue
        bad = Counter(r.reason for r in rejected.get(source, []))
        state = (f"none of its {sum(bad.values())} rows is usable (rejected: "
                 f"{', '.join(f'{k} {n}' for k, n in sorted(bad.items()))})" if bad else "it holds no rows")
        out.append(f"corpus.{split} ({getattr(cfg.corpus, split).path}): {state}: {consequence}")
    return out


def run_warnings(cfg: Config, counts: dict) -> list[str]:
    """After a run: a published version without gold rows, or without any pool row (every
    pool row rejected or filtered, by the curation too), from the manifest's counts."""
    published, out = counts.get("published", {}), []
    where = (f"rejected: {dict(sorted(counts.get('rejected', {}).items()))}, "
             f"filtered: {dict(sorted(counts.get('filtered', {}).items()))}")
    if cfg.corpus.seed is not None and not published.get("seed"):
        out.append(f"the version holds no gold seed row: every row of corpus.seed was rejected or "
                   f"filtered ({where})")
    if not published.get("corpus") and not published.get("generated"):
        out.append(f"the version holds no pool row: every unlabeled row was rejected or "
                   f"filtered ({where}); the student can learn from the gold rows only")
    return out


def plan_warnings(cfg: Config, n_seed: int, n_corpus: int, seed_rejected: list,
                  valid_seed: int | None = None) -> list[str]:
    """What a user should know before paying for the run: a gold set too small to judge the
    teacher, gold labels that are near-misses of the task's, nothing left to distil.
    `valid_seed`: gold rows read before deduplication (none: `split_warnings` says so)."""
    out = []
    if cfg.corpus.seed is not None and valid_seed and not n_seed:
        out.append(f"all {valid_seed} valid gold seed rows are also test rows (test_overlap): none "
                   "is left to tune or judge the teacher, or to train the student")
    elif cfg.corpus.seed is not None and n_seed < cfg.audit.min_seed_rows and valid_seed != 0:
        out.append(f"only {n_seed} valid gold seed rows (< audit.min_seed_rows="
                   f"{cfg.audit.min_seed_rows}): the teacher will be neither tuned nor judged by "
                   "the quality gate; add gold rows to have it checked")
    near = [r for r in seed_rejected if r.reason == "unknown_label" and "did you mean" in r.detail]
    if near:
        out.append(f"{len(near)} gold seed rows rejected for a label that differs from a task label "
                   f"only by case or spaces, e.g. {near[0].input_ref}: {near[0].detail}")
    if n_corpus == 0:
        out.append("no corpus rows to distil: every unlabeled row was rejected, or is a duplicate of "
                   "a seed or test row (is corpus.unlabeled the same file as corpus.seed?)")
    return out


POOL_COST_SAMPLE = 64  # pool rows whose prompts are encoded per few-shot k (tokenizer only)


def pool_cost_by_k(cfg: Config, lt, seeds: list, pool: list) -> list[dict]:
    """What the pool's calls cost under each few-shot k the setup search may choose: prompt
    tokens per row (mean over up to POOL_COST_SAMPLE pool rows, demonstrations drawn from the
    gold rows as `fixed` selection draws them: their lengths, not which ones, matter here) and
    in total. The search picks a dearer k only past `audit.search.cost_margin`; this is the
    price it weighs. One entry (the configured k) when no search runs."""
    from potstill.models.quality.tuning import grid
    from potstill.models.teacher.demos import DemoSelector

    searched = cfg.audit.search.enabled and len(seeds) >= cfg.audit.min_seed_rows
    ks = grid(cfg.teacher, cfg.audit.search, cfg.task)[1] if searched else [cfg.teacher.few_shot.k]
    texts = [r.model_input for r in pool[::max(1, len(pool) // POOL_COST_SAMPLE)][:POOL_COST_SAMPLE]]
    answers = dict(zip(cfg.task.labels, lt.teacher.prompt.verbalizer.answers))
    out = []
    for k in ks:
        demos = (DemoSelector([r.model_input for r in seeds], [r.gold_label for r in seeds], answers,
                              k, "fixed", None, cfg.teacher.few_shot.seed).select(texts)
                 if k and seeds else [()] * len(texts))
        per_row = (sum(len(lt.teacher.prompt_ids(lt.teacher.encode(t, d))) for t, d in zip(texts, demos))
                   / len(texts)) if texts else 0.0
        out.append({"k": k, "tokens_per_row": round(per_row, 1),
                    "prompt_tokens": round(per_row * len(pool))})
    return out


def audit_keys(cfg, lt, seeds: list) -> list[tuple[str, int]]:
    """(store key, prompt tokens) of the requests the audit makes (models/quality/audit.py): the setup
    search's passes when it runs, else the configured prompt over the seed rows and the
    content-free inputs."""
    from potstill.models.quality import audit, tuning

    if not seeds and cfg.teacher.calibration == "none":
        return []
    if len(seeds) >= cfg.audit.min_seed_rows and cfg.audit.search.enabled:
        return tuning.search_requests(cfg.teacher, cfg.audit.search, cfg.task, lt, seeds,
                                      audit.search_embedder(cfg.teacher, cfg.audit.search, cfg.task, lt))
    inputs = [r.model_input for r in seeds]
    if "contextual" in cfg.teacher.calibration:
        inputs += list(cfg.teacher.content_free_inputs)
    return lt.request_keys(inputs, lt.demos(inputs) or [()] * len(inputs))


def remote_cost(cfg: Config, lt, prompt_tokens: list[int]) -> dict | None:
    """The remote teacher's requests, tokens and (priced) USD for the calls planned; None for
    an in-process backend (its cost is the machine's time: `estimate`)."""
    if cfg.teacher.backend != "openai":
        return None
    from potstill.models.teacher.remote import cost_estimate

    return cost_estimate(cfg.teacher.endpoint, lt.teacher, prompt_tokens)


def timed_sample(setup: TeacherSetup, sample: list, calls: int) -> dict:
    """Score `sample` pool rows on the loaded teacher (not stored) and extrapolate."""
    lt = replace(setup, store=None).load()
    lt.score_records(sample[:1])  # warm-up: weights, shared prefix cache
    start = time.perf_counter()
    lt.score_records(sample)
    seconds = time.perf_counter() - start
    rate = len(sample) / max(seconds, 1e-9)
    return {"sample_rows": len(sample), "rows_per_second": round(rate, 3),
            "seconds": round(calls / rate, 3), "note": "one process; more workers divide it"}


def format_plan(p: dict) -> str:
    t, e = p["teacher"], p["estimate"]
    lines = [f"plan for {p['dataset']} (fingerprint {p['fingerprint'][:12]})"]
    for split in ("corpus", "seed", "test"):
        if split in p["rows"]:
            r = p["rows"][split]
            lines.append(f"  {split:7s} read {r['read']}, rejected {sum(r['rejected'].values())} "
                         f"{r['rejected'] or ''}".rstrip())
    lines.append(f"  filtered before the teacher: {p['rows']['filtered'] or 'none'}")
    lines.append(f"  teacher {t['model']}: {t['calls']} calls, {t['prompt_tokens']} prompt tokens; "
                 f"{t['stored']} answers already in the store, {t['from_audit']} gold rows answered "
                 f"by the audit first")
    lines.append(f"  audit: {p['audit']['calls']} calls ({p['audit']['store_hits']} already in the "
                 "store), the teacher's answers compared with the gold labels")
    by_k = t.get("pool_cost_by_setup") or []
    if len(by_k) > 1:  # the search's choice of k sets what every pool row's prompt carries
        base = by_k[0]["tokens_per_row"] or 1.0
        lines.append("  pool prompt tokens by the k the setup search chooses: " + ", ".join(
            f"k={c['k']} {c['prompt_tokens']} ({c['tokens_per_row'] / base:.1f}x)" for c in by_k))
    if "seconds" in e:
        lines.append(f"  estimated {e['seconds']} s at {e['rows_per_second']} rows/s "
                     f"(timed on {e['sample_rows']} rows)")
    if p.get("cost"):
        c = p["cost"]
        lines.append(f"  remote teacher ({c['scoring']}): {c['requests']} requests, {c['prompt_tokens']} "
                     f"prompt + {c['completion_tokens']} completion tokens"
                     + (f", ~${c['usd']:.4f}" if "usd" in c else " (no teacher.endpoint.price_per_million)"))
    lines.append(f"  identical version: {p['existing_version'] or 'none'}")
    return "\n".join(lines)


def write_plan(p: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(p, indent=2) + "\n", encoding="utf-8")
    return out
