"""The dataset card: `README.md` inside every version, so standard tools load it as it is.

`datasets.load_dataset(VERSION_DIR)` reads the card's YAML header: the `configs:` block points
the loader at `data/*.parquet` only (without it the loader sweeps in manifest.json,
validation.json, rejected.parquet and filtered.parquet and fails), and `dataset_info.features`
declares `label` as a ClassLabel whose names are the manifest's `labels`, in order (the Parquet
column stays a string; the loader maps it to the class index). `dataset_info.splits` has the
fields `datasets` requires of it (name, num_bytes, num_examples; without num_bytes it ignores
the block with a warning): num_bytes is the rows' Arrow size as the loader stores them, `label`
as an int64 class index. The Hub renders the same file.

The body says what a consumer needs before training on the rows: what they are, how to load
them, the columns (from the Parquet schema's contract docs), where every input row went, the
teacher and its audited accuracy on the gold rows, the lineage, and what the data is for.
`license` is left for the owner: potstill cannot know the corpus's licence.

Written by `versions.publish` into the hidden folder before the atomic rename, like report.html.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from potstill.publish import contract

CARD = "README.md"
DATA_GLOB = "data/*.parquet"

_SCALARS = {pa.string(): "string", pa.large_string(): "string", pa.float32(): "float32",
            pa.float64(): "float64", pa.int32(): "int32", pa.int64(): "int64", pa.bool_(): "bool"}


def _dtype(t: pa.DataType) -> dict:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"list": _SCALARS[t.value_type]}
    return {"dtype": _SCALARS[t]}


def features(schema: pa.Schema, labels: list[str]) -> list[dict]:
    """`dataset_info.features` in the Hub's YAML form; `label` a ClassLabel over `labels`."""
    out = []
    for f in schema:
        if f.name == "label":
            out.append({"name": "label", "dtype": {"class_label": {
                "names": {str(i): name for i, name in enumerate(labels)}}}})
        else:
            out.append({"name": f.name, **_dtype(f.type)})
    return out


def header(manifest: dict, schema: pa.Schema, rows: int, sizes: dict | None = None) -> dict:
    """The card's YAML metadata; `sizes` is `data_sizes` of the data files (0 when not given)."""
    sizes = sizes or {}
    return {
        "license": "unknown",  # the dataset owner's to set: potstill cannot know the corpus's
        "pretty_name": f"{manifest.get('dataset')} {manifest.get('version')}",
        "task_categories": ["text-classification"],
        "tags": ["knowledge-distillation", "pseudo-labels", "potstill"],
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": "train", "path": DATA_GLOB}]}],
        "dataset_info": {"features": features(schema, list(manifest.get("labels") or [])),
                         "splits": [{"name": "train", "num_bytes": sizes.get("num_bytes", 0),
                                     "num_examples": rows}],
                         "download_size": sizes.get("download_size", 0),
                         "dataset_size": sizes.get("num_bytes", 0)},
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "–" if value is None else str(value)


def _kv(rows: dict) -> str:
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in rows.items()])


def data_sizes(files: list[Path]) -> dict:
    """`num_bytes`: the rows' Arrow size as `datasets` stores them (`label` a class index, 8 bytes
    a row; the other columns as read, a batch at a time); `download_size`: the files' bytes."""
    num_bytes = 0
    for f in files:
        pf = pq.ParquetFile(f)
        columns = [n for n in pf.schema_arrow.names if n != "label"]
        num_bytes += 8 * pf.metadata.num_rows
        for batch in pf.iter_batches(batch_size=65_536, columns=columns):
            num_bytes += batch.nbytes
    return {"num_bytes": num_bytes, "download_size": sum(f.stat().st_size for f in files)}


def _counts(manifest: dict, audit_rows: bool = True) -> str:
    c = manifest.get("counts") or {}
    t = c.get("totals") or {}
    where = ("`rejected.parquet` and `filtered.parquet` beside this card hold the others with "
             "their reason; the loader reads `data/` only" if audit_rows else
             "the others, with their reason, stay in the published version's `rejected.parquet` "
             "and `filtered.parquet`, which this copy leaves out")
    lines = [f"Read {t.get('read', '?')} rows: {t.get('published', '?')} published, "
             f"{t.get('filtered', '?')} filtered, {t.get('rejected', '?')} rejected "
             f"(every row is accounted for; {where})."]
    for kind in ("read", "published", "filtered", "rejected"):
        if c.get(kind):
            lines.append(f"- {kind}: " + ", ".join(f"{k} {v}" for k, v in c[kind].items()))
    return "\n".join(lines)


def _teacher(manifest: dict) -> str:
    m = (manifest.get("models") or {}).get("teacher") or {}
    audit = manifest.get("teacher_audit") or {}
    cal = audit.get("calibrated") or {}
    rows = {"model": m.get("name"), "weights sha256": m.get("sha256"),
            "audited on gold seed rows": audit.get("n"),
            "accuracy (calibrated)": audit.get("accuracy"), "macro-F1": cal.get("macro_f1"),
            "ECE": cal.get("ece"), "calibration": audit.get("calibration_mode")}
    usage = manifest.get("teacher_usage") or {}
    if usage:
        rows.update({"teacher rows answered": usage.get("rows"),
                     "model calls": usage.get("calls"), "from the store": usage.get("cache_hits")})
    note = audit.get("note")
    return _labelled_by(manifest) + _kv(rows) + (f"\n\n{note}" if note else "")


FALLBACK_HEADLINE = "The rows were labelled by the gold rows' own classifier, not by the LLM teacher."


def fallback_note(manifest: dict) -> str | None:
    """What a fallback run says first, in plain words (the card and report.html): which teacher
    labelled the rows and why, with the gate's numbers; None when the LLM labelled them."""
    by = manifest.get("labelled_by") or {}
    if by.get("teacher") != "gold_classifier":
        return None
    gate = by.get("gate") or {}
    gold = gate.get("gold_classifier_cv") or {}
    st = by.get("self_training") or {}
    rounds = (f", then self-trained in {st['rounds']} rounds on {st.get('pool_rows_sampled')} pool "
              f"rows it pseudo-labelled, class-balanced ({', '.join(map(str, st.get('pseudo_labelled', [])))} "
              "per round)" if st.get("rounds") else "")
    return (f"A logistic regression (C={by.get('c')}) on {by.get('encoder')} embeddings of the "
            f"{by.get('seed_rows')} gold seed rows{rounds} labels the pool; label_probs are its "
            f"probabilities (out-of-fold on seed rows). Why: {by.get('why')}. On the gold rows the "
            f"LLM's macro-F1 was {gate.get('macro_f1')}, the classifier's {gold.get('macro_f1')} "
            "(cross-validated).")


def _labelled_by(manifest: dict) -> str:
    note = fallback_note(manifest)
    return f"**{FALLBACK_HEADLINE}** {note}\n\n" if note else ""


def _lineage(manifest: dict) -> str:
    rows = {k: manifest.get(k) for k in ("dataset", "version", "parent_version", "created_at",
                                         "fingerprint", "config_digest", "code_version")}
    for split, files in (manifest.get("inputs") or {}).items():
        for f in files:
            rows[f"input {split}"] = f"`{os.path.basename(str(f.get('path')))}` " \
                                     f"sha256 {str(f.get('sha256'))[:16]}…, {f.get('rows')} rows"
    return _kv(rows) + "\n\nThe resolved config, the curation SQL and every model's SHA-256 are " \
                       "in `manifest.json`; `report.html` shows the selection funnel and the audit."


def render(manifest: dict, schema: pa.Schema, rows: int, sizes: dict | None = None,
           audit_rows: bool = True) -> str:
    """The card's text; `audit_rows`: rejected.parquet and filtered.parquet are beside it."""
    labels = manifest.get("labels") or []
    name, version = manifest.get("dataset"), manifest.get("version")
    front = yaml.safe_dump(header(manifest, schema, rows, sizes), sort_keys=False,
                           allow_unicode=True)
    body = f"""# {name} {version}

A knowledge-distillation dataset published by potstill: {rows} rows of text, each with a
training `label` from {{{', '.join(labels)}}} and the teacher's full distribution over those
labels (`label_probs`, in this order; the Parquet schema carries it too, as the `labels`
metadata of `label_probs` and of the schema). Gold seed rows (`source = seed`) keep their
human label; corpus and generated rows carry the teacher's.

## Load

```python
from datasets import load_dataset
ds = load_dataset("OUTPUT_ROOT/{name}/{version}")["train"]   # or the Hub repo it was pushed to
ds.features["label"].int2str(0)                       # {labels[0] if labels else ''!r}
```

```sql
-- DuckDB
select label, count(*) from '{DATA_GLOB}' group by all;
```

## Columns

{contract.markdown_table(schema)}

## Where the rows went

{_counts(manifest, audit_rows)}

## Teacher

{_teacher(manifest)}

## Lineage

{_lineage(manifest)}

## Intended use

Training and evaluating small classifiers by distillation (soft labels in `label_probs`,
per-row `weight`), and studying label noise (the seed rows hold gold and teacher labels side by
side). The labels of corpus and generated rows are a model's, not a person's: check the audited
accuracy above before using them as ground truth, and do not evaluate on this data (hold out
your own test split). The text comes from the corpus named in the lineage and keeps its biases.

## Licence

Not set: the `license` field above is for the dataset's owner to fill in, following the
licence of the source corpus and the teacher's terms.
"""
    return f"---\n{front}---\n\n{body}"


def write_card(version_dir: str | os.PathLike, out: str | os.PathLike | None = None,
               audit_rows: bool = True) -> Path:
    """Write VERSION_DIR/README.md (or `out`) from its manifest and published Parquet files."""
    vdir = Path(version_dir)
    manifest = json.loads((vdir / "manifest.json").read_text(encoding="utf-8"))
    files = sorted((vdir / "data").glob("*.parquet"))
    schema = pq.read_schema(files[0]) if files else contract.PUBLISHED_SCHEMA
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    out = Path(out) if out is not None else vdir / CARD
    out.write_text(render(manifest, schema, rows, data_sizes(files), audit_rows), encoding="utf-8")
    return out
