"""A tiny hand-made dataset with two versions and answers known by hand (for the analysis tests).

Labels [negative, positive]; label_probs = [p(negative), p(positive)].

v1 published (10 rows):
    id  source gold      teacher   conf   | id  source teacher  conf
    s1  seed   positive  positive  0.93   | c1  corpus positive 0.92
    s2  seed   positive  positive  0.84   | c2  corpus positive 0.52  (margin 0.04)
    s3  seed   positive  negative  0.88   | c3  corpus negative 0.80
    s4  seed   negative  negative  0.76   | c4  corpus negative 0.70
    s5  seed   negative  negative  0.66   |
    s6  seed   negative  positive  0.56   (margin 0.12)
  filtered: f1 corpus low_confidence (negative 0.51), f2 corpus duplicate (never scored)
  rejected: two corpus empty_text, one seed unknown_label
v2: c4 removed, c3 relabelled negative -> positive, c5 (positive 0.90) and c6 (negative 0.95)
  added; config: curation.min_confidence 0.5 -> 0.6, curation.max_per_label added (100).
"""
import math

import pyarrow as pa

from potstill.publish import contract, versions

LABELS = ["negative", "positive"]
SEED = [("s1", "positive", "positive", 0.93), ("s2", "positive", "positive", 0.84),
        ("s3", "positive", "negative", 0.88), ("s4", "negative", "negative", 0.76),
        ("s5", "negative", "negative", 0.66), ("s6", "negative", "positive", 0.56)]
CORPUS_V1 = [("c1", "positive", 0.92), ("c2", "positive", 0.52), ("c3", "negative", 0.80),
             ("c4", "negative", 0.70)]
CORPUS_V2 = [("c1", "positive", 0.92), ("c2", "positive", 0.52), ("c3", "positive", 0.80),
             ("c5", "positive", 0.90), ("c6", "negative", 0.95)]
CONFIG_V1 = {"dataset": "demo", "task": {"labels": LABELS},
             "curation": {"query": "curate.sql", "min_confidence": 0.5}}
CONFIG_V2 = {"dataset": "demo", "task": {"labels": LABELS},
             "curation": {"query": "curate.sql", "min_confidence": 0.6, "max_per_label": 100}}


def row(id, teacher, conf, source="corpus", gold=None, text=None):
    probs = [conf, 1 - conf] if teacher == "negative" else [1 - conf, conf]
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    return {"id": id, "text": text or f"text of {id}", "label": gold or teacher,
            "label_probs": probs, "teacher_label": teacher, "teacher_confidence": conf,
            "teacher_entropy": entropy, "teacher_margin": abs(probs[0] - probs[1]),
            "gold_label": gold, "source": source, "weight": 1.0}


def published(corpus):
    rows = [row(i, t, c, "seed", gold=g) for i, g, t, c in SEED]
    rows += [row(i, t, c) for i, t, c in corpus]
    return pa.Table.from_pylist(rows, schema=contract.PUBLISHED_SCHEMA)


def filtered():
    scored = {**row("f1", "negative", 0.51), "filter_reason": "low_confidence"}
    dup = {k: None for k in scored} | {"id": "f2", "text": "text of c1", "source": "corpus",
                                       "filter_reason": "duplicate"}
    return pa.Table.from_pylist([scored, dup], schema=contract.FILTERED_SCHEMA)


def rejected():
    rows = [{"source": "corpus", "input_ref": "u.jsonl:3", "reason": "empty_text",
             "detail": "text is empty", "raw": '{"text": ""}'},
            {"source": "corpus", "input_ref": "u.jsonl:7", "reason": "empty_text",
             "detail": "text is empty", "raw": '{"text": " "}'},
            {"source": "seed", "input_ref": "s.jsonl:3", "reason": "unknown_label",
             "detail": "label 'neutral' not in task.labels", "raw": '{"label": "neutral"}'}]
    return pa.Table.from_pylist(rows, schema=contract.REJECTED_SCHEMA)


VALIDATION = {"success": True, "results": [
    {"expectation": "expect_column_values_to_be_unique", "column": "id", "success": True,
     "kwargs": {}, "unexpected_count": 0, "observed_value": None},
    {"expectation": "expect_table_row_count_to_be_between", "column": None, "success": True,
     "kwargs": {"min_value": 1}, "unexpected_count": None, "observed_value": 10}]}


def manifest(config, digest, pub):
    sources = pub["source"].to_pylist()
    return {
        "labels": LABELS, "config": config, "config_digest": digest, "fingerprint": digest,
        "code_version": "0.1.0+test",
        "models": {"teacher": {"name": "tiny", "source": "test", "sha256": "0" * 64}},
        "counts": {"read": {"corpus": len(sources) - 6 + 4, "seed": 7},
                   "rejected": {"empty_text": 2, "unknown_label": 1},
                   "filtered": {"duplicate": 1, "low_confidence": 1},
                   "published": {"corpus": len(sources) - 6, "seed": 6},
                   "totals": {"read": pub.num_rows + 5, "published": pub.num_rows,
                              "rejected": 3, "filtered": 2}},
        "teacher_audit": {"accuracy": 4 / 6, "macro_f1": 2 / 3, "ece": 1.93 / 6, "n": 6,
                          "per_class_recall": {"negative": 2 / 3, "positive": 2 / 3}},
        "throughput": {"teacher_rows": pub.num_rows + 1, "teacher_rows_per_second": 12.5},
        "curation": {"query": "curate.sql", "sql": "select * from final",
                     "params": {"min_confidence": config["curation"]["min_confidence"]}},
        "validation": VALIDATION,
    }


def build(root, render=None):
    """Publish v1 and v2 of dataset `demo` under root; returns (v1_dir, v2_dir)."""
    out = []
    for corpus, config, digest in ((CORPUS_V1, CONFIG_V1, "a" * 64), (CORPUS_V2, CONFIG_V2, "b" * 64)):
        pub = published(corpus)
        kwargs = {"render": render} if render else {}
        out.append(versions.publish(root, "demo", published=pub, filtered=filtered(),
                                    rejected=rejected(), manifest=manifest(config, digest, pub),
                                    **kwargs))
    return tuple(out)
