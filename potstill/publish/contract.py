"""The column contract: one pyarrow schema is the source of truth for a published dataset.

The staged shards, the curation SQL's output, the great-expectations suite and the README's
column table are all derived from (or tested against) the schemas in this module.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pyarrow as pa

if TYPE_CHECKING:
    from potstill.config.core import Config
    from potstill.rows.records import Record

SOURCES = ("seed", "corpus", "generated")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    doc: str
    # optional columns: the setting that switches the column on (None = a core column)
    enabled_by: Callable[["Config"], bool] | None = None


def has_signals(cfg: "Config") -> bool:
    """Rows carry the signals columns: the student's (signals.enabled) or the budget's round."""
    return cfg.signals.enabled or cfg.budget.teacher_calls is not None


def _multiple_choice(cfg: "Config") -> bool:
    return cfg.task.kind == "multiple_choice"


def _calibrated(cfg: "Config") -> bool:
    return cfg.teacher.calibration != "none"


def _generated(cfg: "Config") -> bool:
    return cfg.generation.enabled


def _saliency(cfg: "Config") -> bool:
    return cfg.saliency.enabled


def _remote(cfg: "Config") -> bool:
    return cfg.teacher.backend == "openai"


# Columns every published row has, in this order.
CORE_COLUMNS: tuple[Column, ...] = (
    Column("id", pa.string(), False, "Stable content hash of the normalised text (16 hex chars)."),
    Column("text", pa.string(), False, "The example's text, whitespace-normalised."),
    Column("label", pa.string(), False,
           "Training target: the gold label on seed rows, the teacher's label elsewhere."),
    Column("label_probs", pa.list_(pa.float32()), False,
           "Teacher distribution over the manifest's `labels`, in that order (also the field's "
           "`labels` metadata); sums to 1. The teacher is the one the manifest's `labelled_by` "
           "names: the LLM, or in a fallback run the gold rows' own classifier (its out-of-fold "
           "probabilities on seed rows)."),
    Column("teacher_label", pa.string(), False, "The teacher's arg-max label."),
    Column("teacher_confidence", pa.float32(), False, "max(label_probs)."),
    Column("teacher_entropy", pa.float32(), False, "Entropy of label_probs in nats."),
    Column("teacher_margin", pa.float32(), False, "Top-1 minus top-2 probability."),
    Column("gold_label", pa.string(), True, "The human label; set on seed rows only."),
    Column("source", pa.string(), False, "Where the row came from: seed, corpus or generated."),
    Column("weight", pa.float32(), False, "Per-row training weight (>= 0)."),
)

# Rows that never reached the teacher: bad input, with the reason and where it came from.
REJECTED_COLUMNS: tuple[Column, ...] = (
    Column("source", pa.string(), False, "The split the row was read from."),
    Column("input_ref", pa.string(), False, "file path and 1-based row number of the input."),
    Column("reason", pa.string(), False, "Machine-readable rejection reason."),
    Column("detail", pa.string(), True, "Human-readable explanation."),
    Column("raw", pa.string(), True, "The raw record as JSON (truncated to 2,000 chars)."),
)

FILTER_REASON = Column("filter_reason", pa.string(), False,
                       "The filter that dropped the row: duplicate, test_overlap (before the teacher) "
                       "or a curation filter named by the SQL (e.g. low_confidence, label_cap).")


# Columns that optional stages add when they are switched on (e.g. saliency rationales), in
# this order after the core columns, each with the setting that switches it on. A stage
# registers its columns here and sets their values on the record (`row` reads them).
OPTIONAL_COLUMNS: tuple[Column, ...] = (
    Column("choices", pa.list_(pa.string()), True,
           "Multiple choice: the row's options; label_probs covers their letters, in order.",
           enabled_by=_multiple_choice),
    Column("label_probs_raw", pa.list_(pa.float32()), True,
           "The teacher's distribution before calibration (when teacher.calibration is on).",
           enabled_by=_calibrated),
    Column("teacher_outside_mass", pa.float32(), True,
           "Remote teacher: probability the teacher gave to answers outside every label's "
           "surface forms, 1 - their sum (approximate with top_logprobs scoring).",
           enabled_by=_remote),
    Column("intended_label", pa.string(), True,
           "Generated rows: the label the generator was asked to write for (null on other rows); "
           "agreement with teacher_label is a quality signal.",
           enabled_by=_generated),
    Column("rationale", pa.string(), True,
           "Saliency: the top-k words of the text (with its options on multiple choice) for the "
           "explained label, in text order, joined by spaces (null if attribution failed).",
           enabled_by=_saliency),
    Column("rationale_scores", pa.list_(pa.float32()), True,
           "Saliency: each rationale word's attribution (sum over its tokens), aligned with "
           "rationale's words.",
           enabled_by=_saliency),
    Column("student_label", pa.string(), True,
           "Signals: the warm-up student's arg-max label (the student of the round that chose the row).",
           enabled_by=has_signals),
    Column("student_confidence", pa.float32(), True, "Signals: the student's max probability.",
           enabled_by=has_signals),
    Column("student_entropy", pa.float32(), True,
           "Signals: entropy of the student's distribution in nats (LLKD's information need).",
           enabled_by=has_signals),
    Column("student_consistency", pa.float32(), True,
           "Signals: share of MC-dropout predictions equal to student_label, in [0, 1].",
           enabled_by=has_signals),
    Column("ta_teacher_confidence", pa.float32(), True,
           "Signals: the teaching assistant's probability of teacher_label (null without a TA).",
           enabled_by=has_signals),
    Column("ta_student_confidence", pa.float32(), True,
           "Signals: the teaching assistant's probability of student_label (null without a TA).",
           enabled_by=has_signals),
    Column("selection_round", pa.int32(), True,
           "Signals: the teacher-budget round that sent the row to the teacher (1 without a budget).",
           enabled_by=has_signals),
)

# The columns the signals stage adds (derived: every column `has_signals` switches on).
SIGNAL_COLUMNS = tuple(c.name for c in OPTIONAL_COLUMNS if c.enabled_by is has_signals)


def optional_columns(cfg: "Config") -> list[str]:
    """The optional columns the stages switched on by `cfg` add to every row, in contract order."""
    return [c.name for c in OPTIONAL_COLUMNS if c.enabled_by(cfg)]


_TEACHER = ("label_probs", "teacher_label", "teacher_confidence", "teacher_entropy",
            "teacher_margin", "label_probs_raw", "teacher_outside_mass")
_CARRIED = ("rationale", "rationale_scores", "student_label", "student_confidence",
            "student_entropy", "student_consistency", "selection_round", "filter_reason")


def row(record: "Record", labels: Sequence[str] = ()) -> dict[str, Any]:
    """The contract's columns for a record, at the writer: the one function from record to row.

    Seed rows keep their gold label as the training target; a record that never reached the
    teacher (filtered before scoring) has null teacher columns and weight. The teaching
    assistant's distribution `ta_probs` over `labels` is read out at the teacher's and the
    student's labels. Every column is filled (null where its stage did not run); the writer
    keeps those of the stages that are on."""
    values = dict(record.values)
    scored = values.get("label_probs") is not None
    teacher_label = values.get("teacher_label")
    out = {"id": record.id, "text": record.text,
           "label": teacher_label if scored and record.source != "seed" else record.gold_label,
           **{name: values.get(name) for name in _TEACHER + _CARRIED},
           "gold_label": record.gold_label, "source": record.source,
           "weight": 1.0 if scored else None, "intended_label": record.intended_label,
           "choices": list(record.choices) if record.choices else None}
    ta, index = values.get("ta_probs"), {label: i for i, label in enumerate(labels)}

    def ta_at(label):
        return None if ta is None or label not in index else float(ta[index[label]])
    out["ta_teacher_confidence"] = ta_at(teacher_label)
    out["ta_student_confidence"] = ta_at(out["student_label"])
    return out


def schema(columns: tuple[Column, ...] | list[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type, nullable=c.nullable,
                               metadata={"doc": c.doc}) for c in columns])


# Label order in a Parquet file's schema: each distribution column's field metadata and the
# schema's own carry the labels as a JSON list (docs/columns.md, "Label order"); PANDAS_ATTRS is
# what pandas.read_parquet restores as DataFrame.attrs.
LABELS_KEY = b"labels"
PANDAS_ATTRS_KEY = b"PANDAS_ATTRS"
DISTRIBUTIONS = ("label_probs", "label_probs_raw")


def with_labels(s: pa.Schema, labels: Sequence[str] | None) -> pa.Schema:
    """`s` with the label order of its distribution columns written into it (None: `s` as is).
    A consumer reads `json.loads(schema.field("label_probs").metadata[b"labels"])`, or
    `json.loads(schema.metadata[b"labels"])`, or `pandas.read_parquet(path).attrs["labels"]`."""
    if not labels:
        return s
    order = json.dumps(list(labels)).encode()
    fields = [f.with_metadata({**(f.metadata or {}), LABELS_KEY: order})
              if f.name in DISTRIBUTIONS else f for f in s]
    attrs = json.dumps({"labels": list(labels)}).encode()
    return pa.schema(fields, metadata={**(s.metadata or {}), LABELS_KEY: order,
                                       PANDAS_ATTRS_KEY: attrs})


def labels_of(s: pa.Schema) -> list[str] | None:
    """The label order a Parquet schema carries (`with_labels`), or None (older versions)."""
    raw = (s.metadata or {}).get(LABELS_KEY)
    return json.loads(raw) if raw else None


def _optional(names) -> list[Column]:
    names = set(names)
    unknown = names - {c.name for c in OPTIONAL_COLUMNS}
    if unknown:
        raise ValueError(f"not optional contract columns: {sorted(unknown)}")
    return [c for c in OPTIONAL_COLUMNS if c.name in names]


def optional_present(table_or_schema) -> list[str]:
    """The optional columns a table (or schema) carries, in contract order."""
    names = set(table_or_schema.column_names if isinstance(table_or_schema, pa.Table)
                else table_or_schema.names)
    return [c.name for c in OPTIONAL_COLUMNS if c.name in names]


def scored_schema(optional=()) -> pa.Schema:
    """Staged and published rows: the core columns plus the named optional ones."""
    return schema(list(CORE_COLUMNS) + _optional(optional))


def filtered_schema(optional=()) -> pa.Schema:
    """Filtered rows keep every column; teacher columns are null for rows dropped before scoring."""
    cols = list(CORE_COLUMNS) + _optional(optional)
    return schema([Column(c.name, c.type, c.name not in ("id", "text", "source"), c.doc)
                   for c in cols] + [FILTER_REASON])


SCORED_SCHEMA = scored_schema()
PUBLISHED_SCHEMA = SCORED_SCHEMA
FILTERED_SCHEMA = filtered_schema()
REJECTED_SCHEMA = schema(REJECTED_COLUMNS)


def column_names(s: pa.Schema) -> list[str]:
    return [f.name for f in s]


def conform(table: pa.Table, s: pa.Schema) -> pa.Table:
    """Select and cast `table` to schema `s`; a missing column is an error naming it."""
    missing = [f.name for f in s if f.name not in table.column_names]
    if missing:
        raise ValueError(f"table is missing contract columns: {', '.join(missing)}")
    return pa.Table.from_arrays([table[f.name].cast(f.type) for f in s], schema=s)


def markdown_table(s: pa.Schema = PUBLISHED_SCHEMA) -> str:
    """The README's column table, generated from the schema (a test keeps them equal)."""
    lines = ["| column | type | nullable | meaning |", "|---|---|---|---|"]
    for f in s:
        doc = (f.metadata or {}).get(b"doc", b"").decode()
        lines.append(f"| `{f.name}` | {f.type} | {'yes' if f.nullable else 'no'} | {doc} |")
    return "\n".join(lines)
