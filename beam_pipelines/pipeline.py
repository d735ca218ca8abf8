"""The batch job: corpus -> validated records -> teacher scores -> staged Parquet -> a version.

`build` lays out the Beam graph; `run` resolves the config and models, skips the work when an
identical version already exists, runs the graph, then curates, validates and publishes the
staged shards (potstill.job).
"""
from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from potstill import job
from potstill.config import Config
from potstill import contract
from potstill.records import Bounds
from transforms.dedup import Deduplicate
from transforms.read import ReadSplit
from transforms.teacher import ScoreWithTeacher, TeacherModelHandler

log = logging.getLogger(__name__)


def teacher_handler(cfg: Config, model_path: str, expected_rows: int | None = None
                    ) -> TeacherModelHandler:
    t = cfg.teacher
    return TeacherModelHandler(model_path, cfg.task.labels, cfg.task.instruction,
                               batch_size=t.batch_size, max_input_tokens=t.max_input_tokens,
                               dtype=t.dtype, threads=t.threads, expected_rows=expected_rows)


def build(p: beam.Pipeline, cfg: Config, handler: TeacherModelHandler, staging: str) -> None:
    labels, bounds = cfg.task.labels, Bounds(cfg.records.min_chars, cfg.records.max_chars)
    unl, seed, test = cfg.corpus.unlabeled, cfg.corpus.seed, cfg.corpus.test

    reads = [p | "ReadUnlabeled" >> ReadSplit(unl.path, "corpus", unl.text_field, bounds=bounds)]
    if seed is not None:
        reads.append(p | "ReadSeed" >> ReadSplit(seed.path, "seed", seed.text_field,
                                                 seed.label_field, labels, bounds))
    if test is not None:
        # Only the ids matter here: the leak guard. Test rows are never published.
        test_ids = (p | "ReadTest" >> ReadSplit(test.path, "test", test.text_field,
                                                test.label_field, labels, bounds)).records
        test_ids = test_ids | "TestIds" >> beam.Map(lambda r: (r.id, True))
    else:
        test_ids = p | "NoTestIds" >> beam.Create([])

    records = [r.records for r in reads] | "AllRecords" >> beam.Flatten()
    unique = records | "Deduplicate" >> Deduplicate(test_ids)
    scored = unique.unique | "Teacher" >> ScoreWithTeacher(handler)
    rejected = ([r.rejected for r in reads] + [scored["rejected"]]
                | "AllRejected" >> beam.Flatten())

    def write(pcoll, name, schema):
        return pcoll | f"Write{name.title()}" >> beam.io.WriteToParquet(
            f"{staging}/{name}", schema, file_name_suffix=".parquet")

    optional = job.optional_columns(cfg)
    write(scored["scored"], "scored", contract.scored_schema(optional))
    write(rejected, "rejected", contract.REJECTED_SCHEMA)
    write(unique.filtered, "filtered", contract.filtered_schema(optional))


def teacher_throughput(result) -> dict:
    """Rows/second of teacher scoring, from RunInference's own metrics (model load excluded)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        metrics = result.metrics().query(MetricsFilter().with_namespace("potstill_teacher"))
    except (NotImplementedError, AttributeError):  # some runners do not report metrics
        return {}
    rows = sum(c.committed or 0 for c in metrics["counters"] if c.key.metric.name == "num_inferences")
    micros = sum((d.committed.sum if d.committed else 0) for d in metrics["distributions"]
                 if d.key.metric.name == "inference_batch_latency_micro_secs")
    if not rows or not micros:
        return {}
    return {"teacher_rows": rows, "teacher_seconds": round(micros / 1e6, 2),
            "teacher_rows_per_second": round(rows / (micros / 1e6), 2)}


def beam_options(beam_args: list[str]) -> PipelineOptions:
    args = list(beam_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")  # the default would first try to download Prism
    return PipelineOptions(args, save_main_session=False)


def run(cfg: Config, beam_args: list[str] | None = None, test_pipeline=None) -> Path:
    """Run the job for a validated config; returns the published (or identical existing) version."""
    plan = job.plan(cfg)
    existing = job.existing_version(cfg, plan)
    if existing is not None:
        log.info("inputs, config and models are unchanged since %s: nothing to do", existing)
        return existing

    staging = Path(cfg.output_root) / cfg.dataset / ".staging" / uuid.uuid4().hex[:12]
    staging.mkdir(parents=True)
    p = test_pipeline or beam.Pipeline(options=beam_options(beam_args or []))
    expected = sum(f["rows"] for split in ("unlabeled", "seed") for f in plan.inputs.get(split, []))
    build(p, cfg, teacher_handler(cfg, plan.teacher.path, expected), str(staging))
    log.info("running the Beam pipeline (staging at %s)", staging)
    result = p.run()
    result.wait_until_finish()

    version = job.finish(cfg, plan, staging, throughput=teacher_throughput(result))
    shutil.rmtree(staging, ignore_errors=True)
    return version
