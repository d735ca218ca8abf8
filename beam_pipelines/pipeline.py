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
from transforms.generate import GenerateExamples, GeneratorModelHandler
from transforms.read import ReadSplit
from transforms.saliency import AddRationales, SaliencyModelHandler
from models.calibration import Calibration
from transforms.teacher import ScoreWithTeacher, TeacherModelHandler

log = logging.getLogger(__name__)


def prepare_teacher(cfg: Config, model_path: str, expected_rows: int | None = None
                    ) -> tuple[TeacherModelHandler, dict]:
    """Audit the teacher on the gold rows in this process (fitting its calibration), stop if
    it is below `audit.min_accuracy`, then hand the fitted setup to the Beam handler."""
    from models import audit

    seeds = audit.read_seed(cfg)
    report: dict = {"n": 0, "note": "no seed rows: teacher quality unknown"}
    calibration = Calibration()
    if seeds or cfg.teacher.calibration != "none":
        log.info("auditing the teacher on %d gold seed rows", len(seeds))
        lt = audit.build_teacher(cfg, model_path, seeds)
        report = audit.audit(cfg, lt, seeds)
        calibration = lt.calibration
        lt.close()  # the Beam workers load their own copy: free a vLLM engine now
        del lt
        log.info("teacher audit: %s", {k: report[k] for k in ("n", "accuracy") if k in report})
        audit.check(cfg, report)
    handler = TeacherModelHandler(cfg, model_path, seeds, calibration, expected_rows=expected_rows)
    return handler, report


def generator_handler(cfg: Config, model_path: str) -> GeneratorModelHandler:
    from models.generate import Sampling

    g, t = cfg.generation, cfg.teacher
    sampling = Sampling(n=g.outputs_per_prompt, temperature=g.temperature, top_p=g.top_p,
                        max_new_tokens=g.max_new_tokens, seed=g.seed)
    return GeneratorModelHandler(model_path, sampling, dtype=t.dtype, threads=t.threads,
                                 backend=t.backend, engine=t.vllm)  # the teacher's backend


def build(p: beam.Pipeline, cfg: Config, handler: TeacherModelHandler, staging: str,
          generator: GeneratorModelHandler | None = None) -> None:
    labels, bounds = cfg.task.labels, Bounds(cfg.records.min_chars, cfg.records.max_chars)
    unl, seed, test = cfg.corpus.unlabeled, cfg.corpus.seed, cfg.corpus.test

    reads = [p | "ReadUnlabeled" >> ReadSplit(unl.path, "corpus", unl.text_field, labels=labels,
                                              bounds=bounds, choices_field=unl.choices_field)]
    if seed is not None:
        reads.append(p | "ReadSeed" >> ReadSplit(seed.path, "seed", seed.text_field,
                                                 seed.label_field, labels, bounds,
                                                 seed.choices_field))
    test_records = None
    if test is not None:
        # For the leak guards only (ids here, texts in generation). Test rows are never published.
        test_records = (p | "ReadTest" >> ReadSplit(test.path, "test", test.text_field,
                                                    test.label_field, labels, bounds,
                                                    test.choices_field)).records
        test_ids = test_records | "TestIds" >> beam.Map(lambda r: (r.id, True))
    else:
        test_ids = p | "NoTestIds" >> beam.Create([])

    generated = []
    if cfg.generation.enabled:  # new examples join the corpus before dedup and teacher scoring
        if generator is None:
            raise ValueError("generation.enabled: build() needs a generator handler")
        splits = {"corpus": reads[0].records, "seed": reads[1].records if seed is not None else None,
                  "test": test_records}
        generated = [{k: v for k, v in splits.items() if v is not None}
                     | "Generate" >> GenerateExamples(cfg.generation, labels, cfg.task.instruction,
                                                      generator)]

    records = ([r.records for r in reads] + [g["records"] for g in generated]
               | "AllRecords" >> beam.Flatten())
    unique = records | "Deduplicate" >> Deduplicate(test_ids)
    scored = unique.unique | "Teacher" >> ScoreWithTeacher(handler)
    rejected = ([r.rejected for r in reads] + [g["rejected"] for g in generated] + [scored["rejected"]]
                | "AllRejected" >> beam.Flatten())

    def write(pcoll, name, schema):
        return pcoll | f"Write{name.title()}" >> beam.io.WriteToParquet(
            f"{staging}/{name}", schema, file_name_suffix=".parquet")

    optional = job.optional_columns(cfg)
    rows = scored["scored"]
    if cfg.saliency.enabled:  # rationales from the teacher's own model, prompt and calibration
        rows = rows | "Saliency" >> AddRationales(SaliencyModelHandler.like(handler))
    write(rows, "scored", contract.scored_schema(optional))
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

    expected = sum(f["rows"] for split in ("unlabeled", "seed") for f in plan.inputs.get(split, []))
    if cfg.generation.enabled:
        expected += cfg.generation.per_label * len(cfg.task.labels)
    handler, audit_report = prepare_teacher(cfg, plan.teacher.path, expected)
    generator = generator_handler(cfg, plan.generator.path) if plan.generator else None
    staging = Path(cfg.output_root) / cfg.dataset / ".staging" / uuid.uuid4().hex[:12]
    staging.mkdir(parents=True)
    p = test_pipeline or beam.Pipeline(options=beam_options(beam_args or []))
    build(p, cfg, handler, str(staging), generator)
    log.info("running the Beam pipeline (staging at %s)", staging)
    from models.vllm_backend import closing_new_engines

    with closing_new_engines():  # a local runner keeps loaded models (and vLLM engines) alive
        result = p.run()
        result.wait_until_finish()

    version = job.finish(cfg, plan, staging, audit_report, throughput=teacher_throughput(result))
    shutil.rmtree(staging, ignore_errors=True)
    return version
