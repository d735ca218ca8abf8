"""What `--tiny` runs on: tiny random models (potstill.models.tiny) and a synthetic two-label
corpus, written once under a work folder, so that every benchmark runs in seconds with no
packaged model and no network. The figures mean nothing; the code paths are the real ones.

The corpus is short reviews built from a few nouns and adjectives (the adjective decides the
label): unlabeled rows (their labels kept apart in `hidden_labels.parquet`, as a demo corpus's
package keeps them), gold seed rows and test rows. `config.yaml` points at them, with the tiny
Llama as teacher, generator and TA and the tiny BERT as student and few-shot embedder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LABELS = ["negative", "positive"]
INSTRUCTION = "Is the sentiment of this movie review negative or positive?"
NOUNS = ["film", "plot", "cast", "score", "ending", "script", "pacing", "camera"]
ADJECTIVES = {"negative": ["bad", "dull", "awful", "boring"], "positive": ["good", "great", "lovely", "fine"]}


@dataclass(frozen=True)
class Workspace:
    root: Path
    teacher: str          # tiny Llama folder
    student: str          # tiny BERT folder
    config: str           # config.yaml over the synthetic corpus
    data: Path            # unlabeled / seed / test / hidden_labels .parquet

    def texts(self, split: str = "unlabeled") -> list[str]:
        import pyarrow.parquet as pq

        return pq.read_table(self.data / f"{split}.parquet")["text"].to_pylist()

    def saved_student(self) -> str:
        """The tiny BERT under a fresh head, saved as a trained student is (untrained: its
        predictions are random, the arithmetic is the real one)."""
        from potstill.models.student.student import StudentClassifier

        folder = self.root / "student"
        if not (folder / "student.json").is_file():
            StudentClassifier.from_pretrained_encoder(self.student, LABELS).save(folder)
        return str(folder)

    def version(self) -> str:
        """A version published from the config (the job runs once; a rerun reuses it)."""
        from potstill.beam_pipelines.pipeline import run
        from potstill.config.core import load_config

        return str(run(load_config(self.config)))


def reviews(n: int, offset: int = 0) -> list[dict]:
    """n distinct labelled reviews; row i's label is its adjective's."""
    rows = []
    for i in range(offset, offset + n):
        label = LABELS[i % 2]
        adjectives = ADJECTIVES[label]
        noun, other = NOUNS[i // 2 % len(NOUNS)], NOUNS[(i // 16 + 3) % len(NOUNS)]
        rows.append({"text": f"the {noun} was {adjectives[i // 2 % 4]} and the {other} was "
                             f"{adjectives[i // 8 % 4]} ({i})", "label": label})
    return rows


def long_texts(n: int, sentences: int = 12) -> list[str]:
    """n longer texts (a few hundred characters each), for the long-text benchmarks."""
    return [" ".join(r["text"] for r in reviews(sentences, offset=i * sentences)) for i in range(n)]


def workspace(root: str | Path, unlabeled: int = 24, seed: int = 12, test: int = 12) -> Workspace:
    """Build (once) the tiny models, the corpus and the config under `root`."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from potstill.models.tiny import build_tiny_bert, build_tiny_lm

    root = Path(root).resolve()
    models, data = root / "tiny-models", root / "tiny-data"
    teacher, student = models / "llama", models / "bert"
    for folder, build in ((teacher, build_tiny_lm), (student, build_tiny_bert)):
        if not (folder / "config.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            build(folder)
    data.mkdir(parents=True, exist_ok=True)
    rows = reviews(unlabeled + seed + test)
    splits = {"unlabeled": rows[:unlabeled], "seed": rows[unlabeled:unlabeled + seed],
              "test": rows[unlabeled + seed:]}
    pq.write_table(pa.Table.from_pylist([{"text": r["text"]} for r in splits["unlabeled"]]),
                   data / "unlabeled.parquet")
    pq.write_table(pa.Table.from_pylist(splits["unlabeled"]), data / "hidden_labels.parquet")
    for split in ("seed", "test"):
        pq.write_table(pa.Table.from_pylist(splits[split]), data / f"{split}.parquet")
    config = root / "config.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "dataset": "tiny", "output_root": str(root / "datasets"),
        "task": {"labels": LABELS, "instruction": INSTRUCTION},
        "corpus": {"unlabeled": {"path": str(data / "unlabeled.parquet")},
                   "seed": {"path": str(data / "seed.parquet"), "label_field": "label"},
                   "test": {"path": str(data / "test.parquet"), "label_field": "label"}},
        "teacher": {"model": str(teacher), "batch_size": 8, "threads": 1,
                    "few_shot": {"embedder": str(student)}},
        "student": {"model": str(student), "epochs": 1, "min_steps": 2, "batch_size": 8,
                    "max_length": 32, "threads": 1, "head_folds": 2, "probe_folds": 2},
        "audit": {"folds": 2, "on_weak_teacher": "continue", "search": {"few_shot_k": [0, 2]}},
        "signals": {"ta_model": str(teacher), "consistency_samples": 2},
        "generation": {"batch_size": 4},
        "saliency": {"faithfulness_sample": 4},
    }, indent=1))
    return Workspace(root, str(teacher), str(student), str(config), data)
