"""Student and teaching-assistant signals per row (LLKD arXiv 2411.08028, TA-in-the-loop arXiv
2406.05322), as plain functions; transforms/signals.py runs them inside Beam.

Student, with p = the student's distribution with dropout off:
  student_label       = argmax p
  student_confidence  = max p
  student_entropy     = -sum_j p_j ln p_j   (nats): LLKD's "information need" of the student
  student_consistency = (1/M) sum_m [argmax p^(m) = student_label], where p^(m) are M predictions
                        with dropout ON (MC-dropout: the student's own stochasticity, no input
                        perturbation); M = signals.consistency_samples. 1 = the student always
                        says the same thing, 1/M = it almost never repeats its own answer.
Teaching assistant: q = a small LM's zero-shot distribution over the task's labels (the teacher's
  prompt and verbalizers, no demonstrations, no calibration: `TeacherSetup.for_assistant`):
  ta_teacher_confidence = q[teacher_label],  ta_student_confidence = q[student_label]
  (read out by potstill.publish.contract.row when the row is written).
Warm-up (stage one of the two-stage schema): a student trained on the gold seed rows with
  the trainer's loss and loop (models/student/trainer.py), and retrained between budget rounds on the
  seed rows plus every teacher-labelled row so far (KD on label_probs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from potstill.config.quality import Student
from potstill.rows.records import Record

def student_signals(model, texts: Sequence[str], labels: Sequence[str], samples: int,
                    batch_size: int = 64, max_length: int = 128, seed: int = 0) -> list[dict]:
    """The four student columns for each text, in order (formulas in the module docstring).

    Dropout masks come from torch's generator seeded with `seed` per call, so one batch always
    gives the same consistency; the model's train/eval mode is restored afterwards."""
    import torch

    from potstill.models.student.student import length_batches

    out: list[dict] = [{} for _ in texts]
    if not texts:
        return out
    was_training = model.training
    torch.manual_seed(seed)
    try:
        with torch.inference_mode():
            for idx, batch in length_batches(model.tokenizer, texts, batch_size, max_length):
                model.eval()
                probs = torch.softmax(model(**batch).float(), dim=-1)
                best = probs.argmax(dim=-1)
                model.train()  # dropout on: M stochastic predictions
                agree = sum((model(**batch).argmax(dim=-1) == best).float() for _ in range(samples))
                entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)
                for j, i in enumerate(idx):
                    out[i] = {"student_label": labels[int(best[j])],
                              "student_confidence": float(probs[j].max()),
                              "student_entropy": float(entropy[j]),
                              "student_consistency": float(agree[j]) / samples}
    finally:
        model.train(was_training)
    return out


def train_student(student: Student, labels: list[str], seeds: Sequence[Record],
                  labelled: Sequence[tuple[str, Sequence[float]]], out_dir: str | Path,
                  seed: int = 0) -> Path:
    """Train a fresh student on the gold seed rows (CE) and `labelled` (model input, teacher
    distribution) pairs (KD), save it to out_dir and return the folder."""
    import torch

    from potstill.models.student.trainer import fit, new_student

    if not seeds and not labelled:
        raise ValueError("the warm-up student needs seed rows or teacher-labelled rows")
    torch.manual_seed(seed)
    texts = [r.model_input for r in seeds] + [t for t, _ in labelled]
    probs = np.zeros((len(texts), len(labels)))
    gold = [labels.index(r.gold_label) for r in seeds]
    probs[np.arange(len(seeds)), gold] = 1.0
    if labelled:
        probs[len(seeds):] = np.asarray([p for _, p in labelled], dtype=np.float64)
    label_idx = probs.argmax(axis=1)
    is_seed = np.arange(len(texts)) < len(seeds)
    model, spec = new_student(student, labels)
    fit(model, texts, probs, label_idx, is_seed, np.ones(len(texts)), student,
        np.random.default_rng(seed))
    return model.save(out_dir, extra={"student_model": {"name": student.model, "sha256": spec.sha256},
                                      "warm_up": {"seed_rows": len(seeds), "teacher_rows": len(labelled)}})

