"""The Python API: the commands as functions that return typed results.

    import potstill

    job = potstill.init("data/tickets.csv", out="jobs/tickets")      # InitResult
    plan = potstill.plan(job.config)                                 # Plan
    result = potstill.run(job.config)                                # RunResult
    df = potstill.open_version(result.version).to_pandas()           # Version
    student = potstill.train(job.config, dataset=result, out="runs/tickets")   # TrainResult
    teacher = potstill.evaluate(job.config, model="teacher")         # EvalResult

`potstill` forwards these names here on first use, so `import potstill` loads nothing else.
Every function takes a config as a YAML path, a plain dict (relative paths are read from the
current folder) or a `Config`, plus `set`, overrides as the CLI's `--set` takes them
(["curation.min_confidence=0.8"], values read as YAML) or a mapping {"curation.min_confidence":
0.8}. A problem with the input raises what the CLI turns into exit 2: `ConfigError` (a
ValueError) naming the key, a ValueError or OSError naming the field, row or file; a failed
validation suite raises `ValidationFailed` (nothing published). The CLI (cli.py) is a thin
layer over these functions. docs/python-api.md documents them.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence, Union

from potstill.config import core
from potstill.config.core import Config, ConfigError, apply_overrides, parse_config

if TYPE_CHECKING:  # for the annotations only: importing them costs seconds
    import datasets
    import pandas
    import pyarrow

log = logging.getLogger(__name__)

ConfigLike = Union[str, os.PathLike, Mapping[str, Any], Config]
Overrides = Union[Sequence[str], Mapping[str, Any], None]
PARTS = ("data", "filtered", "rejected")


# -- config --------------------------------------------------------------------------------

def load_config(config: ConfigLike, set: Overrides = None) -> Config:  # noqa: A002 - the CLI's --set
    """A validated `Config` from a YAML path, a dict or a Config, with `set` overrides applied
    (as `--set` applies them: before validation). A dict's relative paths are resolved against
    the current folder, a YAML file's against its own folder."""
    if isinstance(set, str):
        raise ConfigError(f"set: expected a list of key.path=value strings or a mapping, got {set!r}")
    overrides = [f"{k}={json.dumps(v, default=str)}" for k, v in set.items()] \
        if isinstance(set, Mapping) else list(set or [])  # JSON is YAML: a value reads back as given
    if isinstance(config, (str, os.PathLike)):
        return core.load_config(config, overrides)
    if isinstance(config, Config):
        if not overrides:
            return config
        # the keys the config set, only: unset ones keep their defaults (and the setup search
        # still searches the teacher settings it never set)
        raw, base = config.model_dump(mode="json", exclude_unset=True), None
    elif isinstance(config, Mapping):
        raw, base = copy.deepcopy(dict(config)), Path.cwd()
    else:
        raise ConfigError(f"config: expected a YAML path, a dict or a Config, got {type(config).__name__}")
    return parse_config(apply_overrides(raw, overrides), base_dir=base)


@contextmanager
def _warnings() -> Iterator[list[str]]:
    """The messages potstill logs at WARNING or above while the block runs."""
    caught: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record.getMessage())
    handler = Collect(logging.WARNING)
    logger = logging.getLogger("potstill")
    logger.addHandler(handler)
    try:
        yield caught
    finally:
        logger.removeHandler(handler)


# -- init ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class InitResult:
    """What `init` wrote: the config ready for `plan` and `run`, the splits' files and rows."""
    config: Path
    labels: list[str]
    rows: dict[str, int]      # seed, test, unlabeled (without an unlabeled file), unused, rejected
    files: dict[str, Path]

    def to_dict(self) -> dict[str, Any]:
        return {"config": str(self.config), "labels": self.labels, "rows": self.rows,
                "files": {k: str(v) for k, v in self.files.items()}}


def init(labelled: str | os.PathLike, *, out: str | os.PathLike | None = None,
         unlabeled: str | os.PathLike | None = None, test_size: int | float | str = 0.2,
         seed_size: int | None = None, text_column: str = "text", label_column: str = "label",
         random_seed: int = 0) -> InitResult:
    """`potstill init`: deterministic stratified seed and test splits of one labelled file
    (CSV, JSONL or Parquet) and a commented config (potstill/config/starter.py). Without
    `unlabeled`, the labelled rows in neither split, labels dropped, are the unlabeled pool."""
    from potstill.config.starter import init as write_starter

    s = write_starter(labelled, out=out, unlabeled=unlabeled, test_size=test_size,
                      seed_size=seed_size, text_column=text_column, label_column=label_column,
                      random_seed=random_seed)
    return InitResult(s.config, s.labels, s.rows, s.files)


# -- plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What a run will read, send to the teacher and cost (`potstill plan`; docs/planning.md).
    `details` is the whole plan as `potstill plan` writes it; str(plan) its summary."""
    dataset: str
    fingerprint: str
    teacher_calls: int        # rows the graph sends to the teacher (answers the store lacks)
    audit_calls: int          # requests the audit sends first, on the gold rows
    store_hits: int
    prompt_tokens: int
    rows: dict[str, Any]      # per split: read, rejected by reason, valid; filtered; unique
    warnings: list[str]
    existing_version: Path | None  # an identical version: `run` would publish nothing new
    estimate: dict[str, Any]
    cost: dict[str, Any] | None    # a remote teacher's requests, tokens and USD
    details: dict[str, Any] = field(repr=False)

    def __str__(self) -> str:
        from potstill.beam_pipelines.plan import format_plan

        return format_plan(self.details)

    def write(self, path: str | os.PathLike) -> Path:
        """The plan as JSON (what `potstill plan --out` writes)."""
        from potstill.beam_pipelines.plan import write_plan

        return write_plan(self.details, path)


def plan(config: ConfigLike, *, set: Overrides = None, sample: int | None = None) -> Plan:  # noqa: A002
    """`potstill plan`: reads and checks every file, counts teacher calls and times `sample`
    rows on the teacher (None: two batches; 0: no model weights loaded)."""
    from potstill.beam_pipelines.plan import make_plan

    p = make_plan(load_config(config, set), sample=sample)
    t = p["teacher"]
    return Plan(dataset=p["dataset"], fingerprint=p["fingerprint"], teacher_calls=t["calls"],
                audit_calls=p["audit"]["calls"], store_hits=t["store_hits"],
                prompt_tokens=t["prompt_tokens"], rows=p["rows"], warnings=list(p["warnings"]),
                existing_version=Path(p["existing_version"]) if p["existing_version"] else None,
                estimate=p["estimate"], cost=p["cost"], details=p)


# -- run -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    """A run's dataset version and what went into it (from its manifest)."""
    version: Path             # OUTPUT_ROOT/DATASET/vN
    dataset: str
    name: str                 # "v1"
    new: bool                 # False: an identical version was there already (nothing ran)
    read: int
    published: int
    rejected: int
    filtered: int
    counts: dict[str, Any]    # the manifest's: read and published by source, rejected and filtered by reason
    teacher_usage: dict[str, Any]  # rows, calls, store hits (cache_hits), tokens, retries
    labelled_by: dict[str, Any]    # the LLM teacher, or the gold rows' classifier (fallback)
    warnings: list[str]       # what the run logged at WARNING

    def open(self) -> "Version":
        return open_version(self.version)


def run(config: ConfigLike, *, set: Overrides = None, beam_args: Sequence[str] = (),  # noqa: A002
        max_teacher_calls: int | None = None, test_pipeline=None) -> RunResult:
    """`potstill run`: run the job and publish a version (or find the identical one).
    `beam_args`: Beam pipeline options (what follows `--` on the command line);
    `max_teacher_calls`: refuse to start when the plan needs more teacher calls."""
    from potstill.beam_pipelines.pipeline import run as run_pipeline
    from potstill.publish import versions

    cfg = load_config(config, set)
    with _warnings() as caught:
        if max_teacher_calls is not None:
            from potstill.beam_pipelines.plan import make_plan

            p = make_plan(cfg, sample=0)
            need = p["teacher"]["calls"] + p["audit"]["calls"]
            if need > max_teacher_calls and not p["existing_version"]:
                raise ValueError(f"the plan needs {need} teacher calls ({p['teacher']['calls']} rows "
                                 f"+ {p['audit']['calls']} audit), over --max-teacher-calls "
                                 f"{max_teacher_calls}: not started (see `potstill plan`)")
            log.info("plan: %d teacher calls, within --max-teacher-calls %d", need, max_teacher_calls)
        before = _versions_there(Path(cfg.output_root) / cfg.dataset)
        version = Path(run_pipeline(cfg, list(beam_args), test_pipeline=test_pipeline))
    m = versions.read_manifest(version)
    counts = m.get("counts", {})
    totals = counts.get("totals", {})
    return RunResult(version=version, dataset=m.get("dataset", cfg.dataset),
                     name=m.get("version", version.name), new=version.name not in before,
                     read=totals.get("read", 0), published=totals.get("published", 0),
                     rejected=totals.get("rejected", 0), filtered=totals.get("filtered", 0),
                     counts=counts, teacher_usage=m.get("teacher_usage", {}),
                     labelled_by=m.get("labelled_by", {}), warnings=caught)


def _versions_there(dataset_dir: Path) -> frozenset[str]:
    try:
        return frozenset(p.name for p in dataset_dir.iterdir())
    except OSError:  # no folder yet (or not a folder: the run says so)
        return frozenset()


# -- train and evaluate --------------------------------------------------------------------

@dataclass(frozen=True)
class TrainResult:
    """A trained student: where it is, and its metrics on the test split."""
    out: Path
    train_on: str
    train_rows: int
    accuracy: float
    macro_f1: float
    n: int                    # test rows scored
    gold_only: dict[str, Any] | None  # the gold-only student beside it (accuracy, macro_f1, ...)
    metrics: dict[str, Any] = field(repr=False)  # everything metrics.json holds
    warnings: list[str] = field(default_factory=list)


def _dataset_path(dataset) -> str | None:
    if dataset is None:
        return None
    if isinstance(dataset, RunResult):
        return str(dataset.version)
    if isinstance(dataset, Version):
        return str(dataset.path)
    return str(dataset)


def train(config: ConfigLike, *, out: str | os.PathLike, dataset=None, train_on: str = "all",
          compare: Sequence[str] | Mapping[str, str | os.PathLike] = (),
          set: Overrides = None) -> TrainResult:  # noqa: A002
    """`potstill train`: the student on a version (`dataset`: its folder, a RunResult or a
    Version), or with train_on="seed" on the config's gold rows alone; saved to `out` with
    metrics.json, its model card and, with a version, OUT/report.html. `compare`: other
    metrics to show beside it, {name: metrics.json or its folder} or ["NAME=PATH", ...]."""
    from potstill.models.student.trainer import parse_compare, train as train_student

    pairs = dict(compare) if isinstance(compare, Mapping) else parse_compare(list(compare))
    cfg, path = load_config(config, set), _dataset_path(dataset)
    with _warnings() as caught:
        metrics = train_student(path, cfg, out, train_on=train_on, compare=pairs)
        if path:  # the report is the version's, with this student's metrics added
            _student_report(path, out, [str(p) for p in pairs.values()])
    base = (metrics.get("baselines") or {}).get("gold-only")
    return TrainResult(out=Path(out), train_on=metrics["train_on"], train_rows=metrics["train_rows"],
                       accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], n=metrics["n"],
                       gold_only=base, metrics=metrics, warnings=caught)


def _student_report(dataset_dir: str, out_dir: str | os.PathLike, others: Sequence[str] = ()) -> None:
    """OUT/report.html: the version's report plus this student's metrics and those it is
    compared with (the gold-only student, the teacher) (potstill.reports.report)."""
    from potstill.reports.report import REPORT, write_report

    try:
        log.info("report: %s", write_report(dataset_dir, Path(out_dir) / REPORT,
                                             [str(out_dir), *others]))
    except Exception as err:  # noqa: BLE001 - the trained student matters more than its report
        log.warning("could not write %s/%s: %s", out_dir, REPORT, err, exc_info=True)


@dataclass(frozen=True)
class EvalResult:
    """The teacher's or a student's metrics on the config's test split."""
    model: str                # "teacher" or the student's folder
    accuracy: float
    macro_f1: float
    n: int
    metrics: dict[str, Any] = field(repr=False)  # per-class recall, ECE, ... as the CLI prints


def evaluate(config: ConfigLike, *, model: str | os.PathLike | TrainResult = "teacher",
             out: str | os.PathLike | None = None, predictions: str | os.PathLike | None = None,
             set: Overrides = None) -> EvalResult:  # noqa: A002
    """`potstill evaluate`: the teacher (set up as the job would label with it) or a trained
    student (its folder or TrainResult) on the test split; `out` also writes the metrics JSON
    (for `train(compare=...)`), `predictions` a student's per-row predictions (JSONL)."""
    import json

    cfg = load_config(config, set)
    name = str(model.out if isinstance(model, TrainResult) else model)
    if name == "teacher":
        from potstill.models.quality.evaluate import evaluate_teacher

        metrics = evaluate_teacher(cfg)
    else:
        from potstill.models.student.trainer import evaluate as evaluate_student

        metrics = evaluate_student(name, cfg, predictions=predictions)
    if out:
        Path(out).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return EvalResult(model=name, accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"],
                      n=metrics["n"], metrics=metrics)


# -- published versions --------------------------------------------------------------------

@dataclass(frozen=True)
class Version:
    """A published dataset version: its rows as a pyarrow Table, a pandas DataFrame or a
    Hugging Face `datasets.Dataset`, and its manifest. `part`: "data" (the published rows,
    docs/columns.md), "filtered" or "rejected"."""
    path: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def dataset(self) -> str:
        return self.manifest.get("dataset", self.path.parent.name)

    @property
    def name(self) -> str:
        return self.manifest.get("version", self.path.name)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels") or [])

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest.get("counts", {})

    def to_arrow(self, part: str = "data") -> "pyarrow.Table":
        import pyarrow.parquet as pq

        if part not in PARTS:
            raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
        if part == "data":  # data/*.parquet, the files the dataset card names
            import pyarrow as pa

            return pa.concat_tables([pq.read_table(f) for f in sorted((self.path / "data").glob("*.parquet"))])
        return pq.read_table(self.path / f"{part}.parquet")

    def to_pandas(self, part: str = "data") -> "pandas.DataFrame":
        return self.to_arrow(part).to_pandas()

    def to_datasets(self) -> "datasets.Dataset":
        """The published rows as `datasets.load_dataset(VERSION_DIR)["train"]` gives them, the
        `label` column a ClassLabel over the manifest's labels (the dataset card's features),
        built in memory: no cache files, no download."""
        import datasets
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self.to_arrow()
        index = pc.index_in(table["label"], value_set=pa.array(self.labels, pa.string()))
        if index.null_count:  # never in a version that passed its suite
            raise ValueError(f"{self.path}: a row's label is not one of {self.labels}")
        table = table.set_column(table.schema.get_field_index("label"), "label", index.cast(pa.int64()))
        features = datasets.Features.from_arrow_schema(table.schema)
        features["label"] = datasets.ClassLabel(names=self.labels)
        return datasets.Dataset(table.cast(features.arrow_schema),
                                info=datasets.DatasetInfo(features=features))


def open_version(ref: str | os.PathLike | RunResult, version: str | None = None, *,
                 root: str | os.PathLike | None = None) -> Version:
    """A published version: its folder, a RunResult, or a dataset name under `root` (default
    $POTSTILL_OUTPUT_ROOT or ./potstill-datasets) with `version` ("v2"; None: the latest), or
    "DATASET@vN" as the analysis commands take it."""
    from potstill.publish import versions
    from potstill.reports.analysis import locate

    if isinstance(ref, RunResult):
        ref = ref.version
    if isinstance(ref, os.PathLike) or (version is None and ("/" in str(ref) or os.sep in str(ref))):
        path = Path(ref)
        if not (path / versions.MANIFEST).is_file():
            raise FileNotFoundError(f"{path} is not a published version folder (no {versions.MANIFEST})")
    else:
        path = locate(root, f"{ref}@{version}" if version else str(ref))
    return Version(path.absolute(), versions.read_manifest(path))
