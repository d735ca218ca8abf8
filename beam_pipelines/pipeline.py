"""The batch job: corpus -> validated records -> teacher scores -> staged Parquet -> a version.

`build` lays out the Beam graph; `run` resolves the config and models, skips the work when an
identical version already exists, runs the graph, then curates, validates and publishes the
staged shards (potstill.job).
"""
from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from models.calibration import Calibration
from potstill import contract, job
from potstill.config import Config
from potstill.records import Bounds
from transforms.dedup import Deduplicate
from transforms.generate import GenerateExamples, GeneratorModelHandler
from transforms.read import ReadSplit
from transforms.saliency import AddRationales, SaliencyModelHandler
from transforms.signals import SelectForTeacher, StudentModelHandler, TAModelHandler
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


@dataclass(frozen=True)
class Round:
    """One pass of the graph. Without a teacher budget there is one round that sends every row
    to the teacher; with one, each round sends at most `calls` pool rows (sql/budget.sql picks
    them) and skips the `done` ids an earlier round sent."""
    index: int = 1
    calls: int | None = None          # pool rows this round may send to the teacher; None = all
    done: frozenset = frozenset()     # pool ids sent to the teacher in earlier rounds
    last: bool = True
    student_dir: str | None = None    # the student whose signals the rows carry (signals.enabled)
    ta: TAModelHandler | None = None  # the teaching assistant, when signals.ta_model is set

    @property
    def first(self) -> bool:
        return self.index == 1


def build(p: beam.Pipeline, cfg: Config, handler: TeacherModelHandler, staging: str,
          generator: GeneratorModelHandler | None = None, round: Round = Round()) -> None:
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
    to_teacher, filtered = unique.unique, [unique.filtered] if round.first else []
    if round.student_dir:  # the student's signals on every unique row (models/signals.py)
        to_teacher = to_teacher | "StudentSignals" >> RunInference(StudentModelHandler(cfg, round.student_dir))
    if round.calls is not None:  # the teacher budget: only the rows sql/budget.sql ranks highest
        chosen = to_teacher | "Budget" >> SelectForTeacher(cfg, round.calls, round.index,
                                                           round.done, round.last)
        to_teacher = chosen["selected"]
        filtered.append(chosen["over_budget"])
        (chosen["ids"] | "WriteChosenIds" >> beam.io.WriteToText(
            f"{staging}/chosen-r{round.index}", file_name_suffix=".txt"))
    elif job.has_signals(cfg):
        to_teacher = to_teacher | "MarkRound" >> beam.Map(lambda r: r.with_signals(selection_round=1))
    if round.ta is not None:  # the TA's label distribution, read out once the teacher has labelled
        to_teacher = to_teacher | "TASignals" >> RunInference(round.ta)
    scored = to_teacher | "Teacher" >> ScoreWithTeacher(handler)
    rejected = [scored["rejected"]]
    if round.first:
        rejected += [r.rejected for r in reads] + [g["rejected"] for g in generated]

    def write(pcolls, name, schema):
        return (pcolls | f"All{name.title()}" >> beam.Flatten(pipeline=p)
                | f"Write{name.title()}" >> beam.io.WriteToParquet(
                    f"{staging}/{name}-r{round.index}", schema, file_name_suffix=".parquet"))

    optional = job.optional_columns(cfg)
    rows = scored["scored"]
    if cfg.saliency.enabled:  # rationales from the teacher's own model, prompt and calibration
        rows = rows | "Saliency" >> AddRationales(SaliencyModelHandler.like(handler))
    write([rows], "scored", contract.scored_schema(optional))
    write(rejected, "rejected", contract.REJECTED_SCHEMA)
    write(filtered, "filtered", contract.filtered_schema(optional))


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


def add_throughput(total: dict, more: dict) -> dict:
    """Teacher throughput summed over budget rounds."""
    if not total or not more:
        return total or more
    rows = total["teacher_rows"] + more["teacher_rows"]
    seconds = total["teacher_seconds"] + more["teacher_seconds"]
    return {"teacher_rows": rows, "teacher_seconds": round(seconds, 2),
            "teacher_rows_per_second": round(rows / seconds, 2)}


def beam_options(beam_args: list[str]) -> PipelineOptions:
    args = list(beam_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")  # the default would first try to download Prism
    return PipelineOptions(args, save_main_session=False)


def split_budget(calls: int, rounds: int) -> list[int]:
    """Teacher calls per round: as equal as possible, earlier rounds taking the remainder."""
    return [calls // rounds + (1 if r < calls % rounds else 0) for r in range(rounds)]


def read_chosen(staging: Path, index: int) -> list[str]:
    return [line for f in sorted(staging.glob(f"chosen-r{index}*.txt"))
            for line in f.read_text().splitlines() if line]


def retrain_student(cfg: Config, staging: Path, seeds, out_dir: Path) -> dict:
    """Stage one again, between budget rounds: seed rows plus every teacher-labelled pool row."""
    from models.signals import train_student
    from potstill.records import with_choices

    scored = job.read_staged(staging, "scored", contract.scored_schema(job.optional_columns(cfg)))
    rows = [r for r in scored.select(["text", "label_probs", "source"] + (
        ["choices"] if "choices" in scored.column_names else [])).to_pylist() if r["source"] != "seed"]
    labelled = [(with_choices(r["text"], r["choices"]) if r.get("choices") else r["text"], r["label_probs"])
                for r in rows]
    train_student(cfg, seeds, labelled, out_dir, seed=cfg.signals.seed)
    return {"seed_rows": len(seeds), "teacher_rows": len(labelled)}


def run(cfg: Config, beam_args: list[str] | None = None, test_pipeline=None) -> Path:
    """Run the job for a validated config; returns the published (or identical existing) version.

    With a teacher budget the graph runs once per round; between rounds the driver counts the
    calls spent and (budget.retrain) retrains the student on what the teacher has labelled."""
    plan = job.plan(cfg)
    existing = job.existing_version(cfg, plan)
    if existing is not None:
        log.info("inputs, config and models are unchanged since %s: nothing to do", existing)
        return existing

    b = cfg.budget
    expected = sum(f["rows"] for split in ("unlabeled", "seed") for f in plan.inputs.get(split, []))
    if cfg.generation.enabled:
        expected += cfg.generation.per_label * len(cfg.task.labels)
    if b.teacher_calls is not None:
        expected = min(expected, b.teacher_calls + sum(f["rows"] for f in plan.inputs.get("seed", [])))
    handler, audit_report = prepare_teacher(cfg, plan.teacher.path, expected)
    generator = generator_handler(cfg, plan.generator.path) if plan.generator else None
    ta = TAModelHandler(cfg, plan.ta.path) if plan.ta else None
    staging = Path(cfg.output_root) / cfg.dataset / ".staging" / uuid.uuid4().hex[:12]
    staging.mkdir(parents=True)
    extra: dict = {}

    student_dir, seeds = None, []
    if cfg.signals.enabled:  # stage one: the warm-up student, on the gold seed rows
        from models.audit import read_seed
        from models.signals import train_student

        seeds = read_seed(cfg)
        student_dir = staging / "student-r1"
        log.info("training the warm-up student on %d seed rows", len(seeds))
        train_student(cfg, seeds, [], student_dir, seed=cfg.signals.seed)
        extra["signals"] = {"warm_up": {"seed_rows": len(seeds), "teacher_rows": 0},
                            "ta_model": cfg.signals.ta_model}
    trained_on = extra.get("signals", {}).get("warm_up")

    calls = split_budget(b.teacher_calls, b.rounds) if b.teacher_calls is not None else [None]
    done: frozenset = frozenset()
    rounds, throughput = [], {}
    from models.vllm_backend import closing_new_engines

    for index, n in enumerate(calls, start=1):
        spec = Round(index, n, done, index == len(calls), student_dir and str(student_dir), ta)
        p = test_pipeline if (test_pipeline is not None and index == 1) else \
            beam.Pipeline(options=beam_options(beam_args or []))
        build(p, cfg, handler, str(staging), generator, spec)
        log.info("running the Beam pipeline, round %d of %d (staging at %s)", index, len(calls), staging)
        with closing_new_engines():  # a local runner keeps loaded models (and vLLM engines) alive
            result = p.run()
            result.wait_until_finish()
        throughput = add_throughput(throughput, teacher_throughput(result))
        if n is None:
            continue
        chosen = read_chosen(staging, index)
        if len(chosen) > n:  # a bug, never bad input: the query's result is checked already
            raise RuntimeError(f"round {index} sent {len(chosen)} rows to the teacher, budget {n}")
        done = done | frozenset(chosen)
        rounds.append({"round": index, "budget": n, "teacher_calls": len(chosen),
                       "student_trained_on": trained_on})
        log.info("budget round %d: %d teacher calls (%d of %d spent)", index, len(chosen),
                 len(done), b.teacher_calls)
        if index < len(calls) and student_dir and b.retrain:
            student_dir = staging / f"student-r{index + 1}"
            trained_on = retrain_student(cfg, staging, seeds, student_dir)
    if b.teacher_calls is not None:
        extra["budget"] = {"teacher_calls": b.teacher_calls, "spent": len(done),
                           "strategy": b.strategy, "rounds": rounds,
                           "note": "pool rows only: seed rows are scored once and not counted"}

    version = job.finish(cfg, plan, staging, audit_report, throughput=throughput, extra=extra)
    shutil.rmtree(staging, ignore_errors=True)
    return version
