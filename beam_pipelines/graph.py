"""The Beam graph of one round: corpus -> records -> [generation] -> dedup -> [student signals]
-> [teacher budget] -> [TA signals] -> teacher -> [saliency] -> staged Parquet shards.

Records travel through every stage as `potstill.rows.records.Record`s, each stage adding its values;
`potstill.publish.contract.row` turns them into the contract's columns at the writers.
"""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from potstill.publish import contract
from potstill import store
from potstill.config.core import Config
from potstill.rows.records import Bounds
from potstill.transforms.dedup import Deduplicate
from potstill.transforms.generate import GenerateExamples, GeneratorModelHandler
from potstill.transforms.read import ReadSplit, ReadSplits
from potstill.transforms.saliency import AddRationales, SaliencyModelHandler
from potstill.transforms.signals import SelectForTeacher, StudentModelHandler, TAModelHandler
from potstill.transforms.write import WriteShards


@dataclass(frozen=True)
class Stages:
    """The model stages of a run, built once by the driver from one teacher setup."""
    teacher: beam.PTransform       # ScoreWithTeacher, or the fallback's ScoreWithClassifier
    saliency: SaliencyModelHandler | None = None
    generator: GeneratorModelHandler | None = None
    ta: TAModelHandler | None = None
    expected_rows: int | None = None  # at most this many rows reach the model stages (progress)


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

    @property
    def first(self) -> bool:
        return self.index == 1


def beam_options(beam_args: list[str]) -> PipelineOptions:
    args = list(beam_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")  # the default would first try to download Prism
    return PipelineOptions(args, save_main_session=False)


def build(p: beam.Pipeline, cfg: Config, stages: Stages, staging: str, round: Round = Round()) -> None:
    labels, bounds = cfg.task.labels, Bounds(cfg.records.min_chars, cfg.records.max_chars)
    unl, seed, test = cfg.corpus.unlabeled, cfg.corpus.seed, cfg.corpus.test

    splits = {"corpus": ReadSplit(unl.path, "corpus", unl.text_field, labels=labels, bounds=bounds,
                                  choices_field=unl.choices_field, encoding=unl.encoding)}
    if seed is not None:
        splits["seed"] = ReadSplit(seed.path, "seed", seed.text_field, seed.label_field, labels,
                                   bounds, seed.choices_field, seed.encoding)
    if cfg.generation.enabled:  # generation takes the corpus and the seed rows apart
        reads = [p | f"Read{name.title()}" >> split for name, split in splits.items()]
    else:  # one step, so that no Flatten holds the corpus (transforms/read.py ReadSplits)
        reads = [p | "ReadSplits" >> ReadSplits(list(splits.values()))]
    test_records = None
    if test is not None:
        # For the leak guards only (ids here, texts in generation). Test rows are never published.
        test_records = (p | "ReadTest" >> ReadSplit(test.path, "test", test.text_field,
                                                    test.label_field, labels, bounds,
                                                    test.choices_field, test.encoding)).records
        test_ids = test_records | "TestIds" >> beam.Map(lambda r: (r.id, True))
    else:
        test_ids = p | "NoTestIds" >> beam.Create([])

    generated = []
    if cfg.generation.enabled:  # new examples join the corpus before dedup and teacher scoring
        if stages.generator is None:
            raise ValueError("generation.enabled: build() needs a generator handler")
        pools = {"corpus": reads[0].records, "seed": reads[1].records if seed is not None else None,
                 "test": test_records}
        generated = [{k: v for k, v in pools.items() if v is not None}
                     | "Generate" >> GenerateExamples(cfg.generation, labels, cfg.task.instruction,
                                                      stages.generator)]

    records = ([r.records for r in reads] + [g["records"] for g in generated]
               | "AllRecords" >> beam.Flatten())
    unique = records | "Deduplicate" >> Deduplicate(test_ids)
    to_teacher, filtered = unique.unique, [unique.filtered] if round.first else []
    if round.student_dir:  # the student's signals on every unique row (models/student/signals.py)
        student = StudentModelHandler(round.student_dir, labels, cfg.signals, cfg.student.max_length,
                                      cfg.student.threads, stages.expected_rows)
        to_teacher = to_teacher | "StudentSignals" >> RunInference(student)
    if round.calls is not None:  # the teacher budget: only the rows sql/budget.sql ranks highest
        chosen = to_teacher | "Budget" >> SelectForTeacher(cfg.budget, len(labels), round.calls,
                                                           round.index, round.done, round.last)
        to_teacher = chosen["selected"]
        filtered.append(chosen["over_budget"])
    elif contract.has_signals(cfg):
        to_teacher = to_teacher | "MarkRound" >> beam.Map(lambda r: r.with_values(selection_round=1))
    if stages.ta is not None:  # the TA's label distribution, read out once the teacher has labelled
        to_teacher = to_teacher | "TASignals" >> RunInference(stages.ta)
    scored = to_teacher | "Teacher" >> stages.teacher
    # The scored rows stay in branches (the teacher's stored and new answers) down to their own
    # writers: a Flatten with several inputs is materialised whole by the in-process runner.
    branches = scored["scored"]
    if stages.saliency is not None:  # rationales from the teacher's own setup and weights
        branches = [branches | "AllScored" >> beam.Flatten(pipeline=p)
                    | "Saliency" >> AddRationales(stages.saliency)]
    rejected = [scored["rejected"]]
    if round.first:
        rejected += [r.rejected for r in reads] + [g["rejected"] for g in generated]

    def write(pcolls, name, schema, to_row=None):
        rows = pcolls | f"All{name.title()}" >> beam.Flatten(pipeline=p)
        return rows | f"Write{name.title()}" >> WriteShards(staging, f"{name}-r{round.index}", schema,
                                                             to_row, labels)

    optional = contract.optional_columns(cfg)
    written = [write(rejected, "rejected", contract.REJECTED_SCHEMA),
               write(filtered, "filtered", contract.filtered_schema(optional), contract.row)]
    for i, rows in enumerate(branches):
        part = f"Part{i}" if i else ""
        keys = rows | f"StoreKeys{part}" >> beam.FlatMap(  # none when the classifier labelled them
            lambda r: [{"key": r.value("request").key}] if r.value("request") else [])
        written += [rows | f"WriteScored{part}" >> WriteShards(
                        staging, f"scored-r{round.index}", contract.scored_schema(optional),
                        contract.row, labels),
                    keys | f"WriteKeys{part}" >> WriteShards(  # the store entries this version needs
                        staging, f"keys-r{round.index}", store.KEYS_SCHEMA)]
    # One last step that depends on every writer: a runner that computes only the graph's
    # final leaf (Beam's DaskRunner) still runs them all.
    written | "AllWritten" >> beam.Flatten(pipeline=p) | "Done" >> beam.Map(lambda n: n)
