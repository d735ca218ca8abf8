"""The column contract: one pyarrow schema is the source of truth for a published dataset.

The staged shards, the curation SQL's output, the great-expectations suite and the README's
column table are all derived from (or tested against) the schemas in this module.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SOURCES = ("seed", "corpus", "generated")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    doc: str


# Columns every published row has, in this order.
CORE_COLUMNS: tuple[Column, ...] = (
    Column("id", pa.string(), False, "Stable content hash of the normalised text (16 hex chars)."),
    Column("text", pa.string(), False, "The example's text, whitespace-normalised."),
    Column("label", pa.string(), False,
           "Training target: the gold label on seed rows, the teacher's label elsewhere."),
    Column("label_probs", pa.list_(pa.float32()), False,
           "Teacher distribution over the manifest's `labels`, in that order; sums to 1."),
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
# this order after the core columns. A stage registers its columns here, nowhere else.
OPTIONAL_COLUMNS: tuple[Column, ...] = (
    Column("choices", pa.list_(pa.string()), True,
           "Multiple choice: the row's options; label_probs covers their letters, in order."),
    Column("label_probs_raw", pa.list_(pa.float32()), True,
           "The teacher's distribution before calibration (when teacher.calibration is on)."),
    Column("intended_label", pa.string(), True,
           "Generated rows: the label the generator was asked to write for (null on other rows); "
           "agreement with teacher_label is a quality signal."),
    Column("rationale", pa.string(), True,
           "Saliency: the top-k words of the text (with its options on multiple choice) for the "
           "explained label, in text order, joined by spaces (null if attribution failed)."),
    Column("rationale_scores", pa.list_(pa.float32()), True,
           "Saliency: each rationale word's attribution (sum over its tokens), aligned with "
           "rationale's words."),
    Column("student_label", pa.string(), True,
           "Signals: the warm-up student's arg-max label (the student of the round that chose the row)."),
    Column("student_confidence", pa.float32(), True, "Signals: the student's max probability."),
    Column("student_entropy", pa.float32(), True,
           "Signals: entropy of the student's distribution in nats (LLKD's information need)."),
    Column("student_consistency", pa.float32(), True,
           "Signals: share of MC-dropout predictions equal to student_label, in [0, 1]."),
    Column("ta_teacher_confidence", pa.float32(), True,
           "Signals: the teaching assistant's probability of teacher_label (null without a TA)."),
    Column("ta_student_confidence", pa.float32(), True,
           "Signals: the teaching assistant's probability of student_label (null without a TA)."),
    Column("selection_round", pa.int32(), True,
           "Signals: the teacher-budget round that sent the row to the teacher (1 without a budget)."),
)


# The optional columns the signals stage adds (signals.enabled or a teacher budget).
SIGNAL_COLUMNS = ("student_label", "student_confidence", "student_entropy", "student_consistency",
                  "ta_teacher_confidence", "ta_student_confidence", "selection_round")


def schema(columns: tuple[Column, ...] | list[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type, nullable=c.nullable,
                               metadata={"doc": c.doc}) for c in columns])


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
