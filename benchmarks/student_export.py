"""Measure the student's standard export against the student itself on a test split.

    python -m benchmarks.student_export --student runs/rt/student --config configs/rt-sentiment.yaml
        [--out results.json] [--tiny]

Prints, over the config's test rows (batched and padded like `potstill evaluate`): label
agreement and the largest logit difference of (a) the faithful export (models/student/hf_export.py:
one appended layer computes the masked mean pooling and the head) and (b) the naive one (the
encoder's [CLS] pooler with our head as BERT's classifier), each against the student.
`--tiny`: an untrained student over the tiny BERT, on the synthetic corpus's test rows.
"""
from __future__ import annotations

import sys

import torch

from benchmarks.harness import Benchmark
from potstill.config.core import load_config
from potstill.models.student import hf_export
from potstill.models.student.student import length_batches, load_student
from potstill.models.student.trainer import read_test


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("student_export", __doc__, threads=1, tiny={
        "student": lambda ws: ws.saved_student(), "config": lambda ws: ws.config})
    bench.parser.add_argument("--student", help="a trained student's folder")
    bench.parser.add_argument("--config", help="whose test split is scored")
    args = bench.parse(argv)
    bench.require("student", "config")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    model, tok = load_student(args.student)
    texts, _, _ = read_test(cfg)
    exports = {"faithful": hf_export.to_bert_classifier(model),
               "naive_cls_pooler": hf_export.naive_cls_export(model)}
    stats = {name: {"export": name, "agree": 0, "max_abs_logit_diff": 0.0} for name in exports}
    with torch.inference_mode():
        for idx, batch in length_batches(tok, texts, 64, cfg.student.max_length):
            ours = model(**batch)
            for name, m in exports.items():
                theirs = m(**batch).logits
                s = stats[name]
                s["agree"] += int((theirs.argmax(-1) == ours.argmax(-1)).sum())
                s["max_abs_logit_diff"] = max(s["max_abs_logit_diff"], float((theirs - ours).abs().max()))
    for s in stats.values():
        s["agreement"] = s["agree"] / len(texts)
    return bench.report(list(stats.values()), {
        "export": "export", "labels = student": "agreement:.2%", "max abs logit diff": "max_abs_logit_diff:.1e"},
        title=f"{args.student} on {len(texts)} test rows of {args.config}", test_rows=len(texts))


if __name__ == "__main__":
    sys.exit(main())
