"""Measure the student's standard export against the student itself on a test split.

    python benchmarks/student_export.py --student runs/rt/student --config configs/rt-sentiment.yaml

Prints, over the config's test rows (batched and padded like `potstill evaluate`): label
agreement and the largest logit difference of (a) the faithful export (models/student/hf_export.py:
one appended layer computes the masked mean pooling and the head) and (b) the naive one (the
encoder's [CLS] pooler with our head as BERT's classifier), each against the student.
"""
from __future__ import annotations

import argparse
import json

import torch

from potstill.models.student import hf_export
from potstill.models.student.student import length_batches, load_student
from potstill.models.student.trainer import read_test
from potstill.config.core import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    model, tok = load_student(args.student)
    texts, _, _ = read_test(cfg)
    exports = {"faithful": hf_export.to_bert_classifier(model),
               "naive_cls_pooler": hf_export.naive_cls_export(model)}
    stats = {name: {"agree": 0, "max_abs_logit_diff": 0.0} for name in exports}
    with torch.inference_mode():
        for idx, batch in length_batches(tok, texts, 64, cfg.student.max_length):
            ours = model(**batch)
            for name, m in exports.items():
                theirs = m(**batch).logits
                s = stats[name]
                s["agree"] += int((theirs.argmax(-1) == ours.argmax(-1)).sum())
                s["max_abs_logit_diff"] = max(s["max_abs_logit_diff"], float((theirs - ours).abs().max()))
    for s in stats.values():
        s["agreement"] = round(s["agree"] / len(texts), 4)
    print(json.dumps({"rows": len(texts), **stats}))


if __name__ == "__main__":
    main()
