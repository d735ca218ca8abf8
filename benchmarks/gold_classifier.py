"""The gold-rows classifier (LR on the student encoder's embeddings of the seed rows, models/quality/trust.py) on
the test split: what the gold rows alone reach without fine-tuning.

    python benchmarks/gold_classifier.py CONFIG.yaml [key.path=value ...]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import torch
torch.set_num_threads(1)
from potstill.models.embed import Embedder
from potstill.models.registry import resolve_model
from potstill.models.quality.trust import choose_c, fit_gold_classifier
from potstill.models.quality.audit import read_seed
from potstill.config.core import load_config
from potstill.rows.records import read_configured
cfg = load_config(sys.argv[1], sys.argv[2:])
labels = cfg.task.labels
seeds = read_seed(cfg); test, _ = read_configured(cfg, "test")
emb = Embedder(resolve_model(cfg.student.model).path, max_length=cfg.student.max_length)
x, y = emb([r.model_input for r in seeds]), np.array([labels.index(r.gold_label) for r in seeds])
tx, ty = emb([r.model_input for r in test]), np.array([labels.index(r.gold_label) for r in test])
c, _, _ = choose_c(x, y, len(labels), cfg.student.probe_c, cfg.student.probe_folds)
pred = fit_gold_classifier(x, y, len(labels), c)(tx).argmax(1)
print(f"{sys.argv[1]}: gold-rows classifier (C={c}) test accuracy {(pred == ty).mean():.3f} on {len(ty)} rows")
