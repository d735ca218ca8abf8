"""The batch job, top to bottom: plan -> audit the teacher -> rounds of the Beam graph ->
curate -> validate -> publish.

`run` checks the settings and input files, resolves the models, takes the dataset's lock
(one run per dataset; a dead run's leftovers go), hashes the inputs (an identical existing
version ends the job there), audits the teacher on the gold seed rows and fits its calibration,
builds the one teacher setup every stage uses, runs the graph (beam_pipelines/graph.py) once or
once per teacher-budget round, then hands the staged shards to the library (potstill.job) to
curate, validate and publish. Every teacher answer goes through the teacher store
(potstill/store.py): a rerun pays only for requests never answered.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import uuid
from collections import Counter
from pathlib import Path

import apache_beam as beam

from potstill.beam_pipelines import plan as planning, runners, usage
from potstill.beam_pipelines.graph import Round, Stages, beam_options, build
from potstill.beam_pipelines.threads import torch_threads
from potstill.models import loading
from potstill.models.quality.audit import read_seed, tune_and_gate
from potstill.models.quality.gate import WeakTeacher
from potstill.models.teacher.backends import open_store
from potstill.models.registry import ensure_offline, resolve_model
from potstill.models.teacher.teacher_setup import TeacherSetup
from potstill.publish import contract, curation, versions
from potstill import job, memory, store
from potstill.rows import records
from potstill.config.core import Config
from potstill.rows.records import Record
from potstill.transforms.generate import GeneratorModelHandler
from potstill.transforms.saliency import SaliencyModelHandler
from potstill.transforms.signals import TAModelHandler
from potstill.transforms.teacher import ScoreWithTeacher, TeacherModelHandler, partitions

log = logging.getLogger(__name__)


@memory.fewer_collections()  # full garbage collections cost a job ~6% of its time at the defaults
def run(cfg: Config, beam_args: list[str] | None = None, test_pipeline=None) -> Path:
    """Run the job for a validated config; returns the published (or identical existing) version."""
    ensure_offline()
    beam_args = runners.resolve(beam_args or [])
    if not runners.reports_metrics(beam_args):
        log.warning("runner %s reports no Beam metrics: teacher_usage comes from the teacher store "
                    "as on any runner, but the closing stage counters are empty%s",
                    runners.runner_name(beam_args), ", and generation's requests to the endpoint "
                    "are not counted" if runners.not_counted(beam_args, remote_generation(cfg)) else "")
    curation.check_settings(cfg.curation)  # a setting the chosen SQL never reads is an error
    records.check_input_files(cfg)  # a whole-file problem stops the job before any model loads
    for line in planning.same_file_warnings(cfg):
        log.warning("%s", line)
    models = {role: resolve_model(name) for role, name in job.model_roles(cfg).items()}
    if cfg.teacher.backend == "openai":  # a wrong URL, key, model or scoring stops the job here
        from potstill.models.teacher.remote_endpoint import resolved_config

        cfg = resolved_config(cfg, models["teacher"].path)
    with versions.dataset_lock(cfg.output_root, cfg.dataset), \
            store.run_lease(cfg.output_root, cfg.dataset):  # one run per dataset; gc spares what it reads
        for leftover in versions.remove_leftovers(cfg.output_root, cfg.dataset):
            log.info("removed %s (left by a run that did not finish)", leftover)
        plan = job.plan(cfg, models)
        existing = job.existing_version(cfg, plan)
        if existing is not None:
            log.info("inputs, config and models are unchanged since %s: nothing to do", existing)
            return existing
        # a version of the same inputs still here has teacher_error rows: this run retries them
        retrying = versions.find_by_fingerprint(cfg.output_root, cfg.dataset, plan.fingerprint)
        return _run(cfg, plan, beam_args or [], test_pipeline, retrying)


def _run(cfg: Config, plan: job.Plan, beam_args: list[str], test_pipeline,
         retrying: Path | None = None) -> Path:
    """Audit, build the stages from one teacher setup, run the rounds, then curate, validate
    and publish (potstill.job.finish; `retrying`: see there)."""
    seeds = read_seed(cfg)
    teacher_store = open_store(cfg.output_root, cfg.teacher, plan.teacher.sha256)
    teacher_store.check_writable()  # before any model loads: answers must be kept
    threads = torch_threads(cfg.teacher.threads, beam_args)  # cores / worker processes
    setup, audit_report = audit_teacher(cfg, TeacherSetup.from_config(
        cfg, plan.teacher.path, seeds, store=teacher_store, threads=threads), seeds)
    expected = plan.expected_rows(cfg)
    teacher_stage, labelled_by = labelling_stage(cfg, setup, audit_report, seeds, expected)
    explain = cfg.saliency.enabled and labelled_by["teacher"] == "llm"
    if cfg.saliency.enabled and not explain:
        log.warning("saliency.enabled: no rationales, the LLM did not label the rows")
    stages = Stages(
        teacher=teacher_stage,
        saliency=SaliencyModelHandler(setup, cfg.saliency, expected) if explain else None,
        generator=generator_handler(cfg, plan.generator.path, threads) if plan.generator else None,
        ta=TAModelHandler(setup.for_assistant(plan.ta.path), cfg.signals.ta_batch_size, expected)
        if plan.ta else None,
        expected_rows=expected)

    staging = Path(cfg.output_root) / cfg.dataset / ".staging" / uuid.uuid4().hex[:12]
    staging.mkdir(parents=True)
    try:
        audit_usage = usage.remote_counts(audit_report.pop("remote_usage", {}))
        throughput, extra = run_rounds(cfg, stages, staging, seeds, beam_args, test_pipeline,
                                       driver_usage=audit_usage)
        collapsed = check_collapse(cfg, staging, seeds, audit_report) \
            if labelled_by["teacher"] == "llm" and cfg.task.kind == "classification" else None
        if collapsed:  # label the pool again, with the gold rows' classifier (no LLM call)
            teacher_stage, labelled_by = fallback_stage(cfg, collapsed, seeds, expected)
            explain = False
            stages = dataclasses.replace(stages, teacher=teacher_stage, saliency=None)
            shutil.rmtree(staging)
            staging.mkdir(parents=True)
            throughput, extra = run_rounds(cfg, stages, staging, seeds, beam_args, None,
                                           driver_usage=audit_usage)
        extra["labelled_by"] = labelled_by
        if explain:  # the deletion test, on the driver (models/saliency/faithfulness.py)
            from potstill.models.saliency.faithfulness import manifest_entry

            scored = _staged_scored(cfg, staging, columns=["id", "text", "choices", "rationale",
                                                           "teacher_label", "gold_label"])
            extra["saliency"] = manifest_entry(setup, cfg.saliency, scored)
        driver_keys = audit_report.pop("store_keys", [])
        version = job.finish(cfg, plan, staging, audit_report, throughput=throughput, extra=extra,
                             driver_keys=driver_keys, retrying=retrying)
        for line in planning.run_warnings(cfg, versions.read_manifest(version)["counts"]):
            log.warning("%s", line)
        if labelled_by["teacher"] != "llm":
            gate, gold = labelled_by["gate"], labelled_by["gate"].get("gold_classifier_cv") or {}
            f1 = lambda v: f"{v:.3f}" if isinstance(v, (int, float)) else "not measured"  # noqa: E731
            log.warning("labelled by the gold rows' own classifier (%s), not the LLM teacher: the "
                        "LLM's macro-F1 on the gold rows was %s, the classifier's %s. %s",
                        labelled_by["encoder"], f1(gate.get("macro_f1")), f1(gold.get("macro_f1")),
                        labelled_by["why"])
        return version
    finally:
        loading.release()  # the shared weights (and vLLM engines) of this run
        shutil.rmtree(staging, ignore_errors=True)


def labelling_stage(cfg: Config, setup: TeacherSetup, audit_report: dict, seeds: list[Record],
                    expected: int) -> tuple[beam.PTransform, dict]:
    """The stage that labels the rows, and the manifest's `labelled_by`: the LLM teacher, or,
    when the gate found it weak and `audit.on_weak_teacher` is fallback, the gold rows' own
    classifier (models/quality/fallback.py: no LLM call on the pool)."""
    gate = audit_report.get("gate") or {}
    if gate.get("weak") and gate.get("action") == "fallback":
        return fallback_stage(cfg, gate, seeds, expected)
    handler = TeacherModelHandler(setup, retries=cfg.teacher.max_retries, expected_rows=expected)
    stage = ScoreWithTeacher(handler, keep_raw="label_probs_raw" in contract.optional_columns(cfg),
                             partitions=partitions(expected, cfg.teacher.batch_size),
                             lookup_answers=cfg.teacher.store_lookup_answers)
    return stage, {"teacher": "llm", "model": cfg.teacher.model}


def fallback_stage(cfg: Config, gate: dict, seeds: list[Record], expected: int
                   ) -> tuple[beam.PTransform, dict]:
    """The gold rows' own classifier as the labelling stage, and its `labelled_by`; with
    `audit.self_training_rounds`, self-trained first on a sample of the pool read here."""
    from potstill.models.quality import fallback, self_training
    from potstill.transforms.classifier import ClassifierModelHandler, ScoreWithClassifier

    clf = self_training.fit(cfg.audit, cfg.student, cfg.task.labels, seeds,
                            pool_sample(cfg, seeds) if cfg.audit.self_training_rounds else None)
    rounds = clf.self_training.get("rounds")
    log.warning("the gold rows' own classifier (%s, C=%g%s) labels the rows, not the LLM", clf.encoder,
                clf.c, f", {rounds} rounds of self-training on {clf.self_training['pool_rows_sampled']} "
                "pool rows" if rounds else "")
    return (ScoreWithClassifier(ClassifierModelHandler(clf, expected_rows=expected)),
            fallback.manifest_entry(clf, gate))


def pool_sample(cfg: Config, seeds: list[Record]):
    """The pool rows the fallback teacher self-trains on (models/quality/self_training.py): no
    seed row, and no row the test-leak guard would filter."""
    from potstill.models.quality.self_training import pool_sample as sample

    a, unl = cfg.audit, cfg.corpus.unlabeled
    exclude = {r.id for r in seeds}
    if cfg.corpus.test is not None:
        exclude |= {r.id for r in records.read_configured(cfg, "test")[0]}
    return sample(unl, cfg.task.labels, records.Bounds(cfg.records.min_chars, cfg.records.max_chars),
                  a.self_training_max_rows, a.search.seed, exclude)


def check_collapse(cfg: Config, staging: Path, seeds: list[Record], audit_report: dict) -> dict | None:
    """After the LLM labelled the pool: a pool labelled almost all one class where the gold rows
    are not (potstill.job.label_collapse) is what the gate would have called weak, had it had
    the rows to judge on. `audit.on_weak_teacher` decides as it does for the gate; returns the
    gate-like verdict when the pool is to be labelled again by the gold rows' classifier."""
    gold = Counter(r.gold_label for r in seeds)
    if sum(n >= cfg.audit.min_class_support for n in gold.values()) < 2 and \
            cfg.validation.max_label_share is None:
        return None  # too few gold rows to say the pool is unlike them (audit.min_class_support)
    collapse = job.label_collapse(staging, [r.gold_label for r in seeds],
                                  cfg.validation.label_share_min_rows, cfg.validation.max_label_share)
    if collapse is None:
        return None
    audit_report["label_collapse"] = collapse
    action = cfg.audit.on_weak_teacher
    if action == "fallback" and len({r.gold_label for r in seeds}) > 1:
        log.warning("%s; the gold rows' own classifier labels the pool again instead "
                    "(audit.on_weak_teacher=fallback)", collapse["why"])
        return {"weak": True, "reasons": [collapse["why"]], "n": len(seeds), "action": "fallback",
                "judged_on": "the pool's teacher labels (label collapse)"}
    if action in ("stop", "fallback"):
        raise WeakTeacher(f"{collapse['why']}: stopped before publishing (audit.on_weak_teacher="
                          f"{action}{', and fewer than two gold labels to fall back on' if action == 'fallback' else ''}). "
                          "The teacher's answers are kept in the store.")
    if action == "warn":
        log.warning("%s; publishing anyway (audit.on_weak_teacher=warn)", collapse["why"])
    return None


def audit_teacher(cfg: Config, setup: TeacherSetup, seeds: list[Record]) -> tuple[TeacherSetup, dict]:
    """Tune and audit the teacher on the gold rows in this process (models/quality/audit.py
    tune_and_gate: setup search, calibration, quality gate; answers come from the teacher store
    when it has them); a weak teacher stops the job here, before the pool is labelled. The
    chosen setup, with its calibration, goes to every stage."""
    return tune_and_gate(cfg, setup, seeds)


def generator_handler(cfg: Config, model_path: str, threads: int | None = None) -> GeneratorModelHandler:
    from potstill.models.generation.generate import Sampling

    g, t = cfg.generation, cfg.teacher
    sampling = Sampling(n=g.outputs_per_prompt, temperature=g.temperature, top_p=g.top_p,
                        max_new_tokens=g.max_new_tokens, seed=g.seed)
    return GeneratorModelHandler(model_path, sampling, dtype=t.dtype, threads=threads or t.threads,
                                 backend=t.backend,  # the teacher's backend
                                 engine=t.endpoint if t.backend == "openai" else t.vllm)


def run_rounds(cfg: Config, stages: Stages, staging: Path, seeds: list[Record],
               beam_args: list[str], test_pipeline=None,
               driver_usage: Counter = Counter()) -> tuple[dict, dict]:
    """The graph once, or once per teacher-budget round; (teacher throughput, manifest extras
    with `teacher_usage`; `driver_usage`: remote requests the driver made, in the audit).

    With a budget, each round's chosen pool rows are read back from its staged scored shard
    (`selection_round`); between rounds the student is retrained (budget.retrain) on the seed
    rows plus everything the teacher has labelled so far."""
    from potstill.models.teacher.vllm_backend import closing_new_engines

    b, extra = cfg.budget, {}
    student_dir = None
    if cfg.signals.enabled:  # stage one: the warm-up student, on the gold seed rows
        from potstill.models.student.signals import train_student

        student_dir = staging / "student-r1"
        log.info("training the warm-up student on %d seed rows", len(seeds))
        train_student(cfg.student, cfg.task.labels, seeds, [], student_dir, seed=cfg.signals.seed)
        extra["signals"] = {"warm_up": {"seed_rows": len(seeds), "teacher_rows": 0},
                            "ta_model": cfg.signals.ta_model}
    trained_on = extra.get("signals", {}).get("warm_up")

    calls = split_budget(b.teacher_calls, b.rounds) if b.teacher_calls is not None else [None]
    done: frozenset = frozenset()
    rounds, counts, stages_done = [], Counter(), Counter()
    for index, n in enumerate(calls, start=1):
        spec = Round(index, n, done, index == len(calls), student_dir and str(student_dir))
        p = test_pipeline if (test_pipeline is not None and index == 1) else \
            beam.Pipeline(options=beam_options(beam_args))
        build(p, cfg, stages, str(staging), spec)
        log.info("running the Beam pipeline, round %d of %d (staging at %s)", index, len(calls), staging)
        with closing_new_engines():  # a local runner keeps loaded models (and vLLM engines) alive
            result = p.run()
            result.wait_until_finish()
        counts += usage.remote_counters(result)  # generation's remote requests (Beam metrics)
        stages_done += usage.stage_counters(result)
        if n is None:
            continue
        chosen = chosen_ids(cfg, staging, index)
        assert len(chosen) <= n, f"round {index} sent {len(chosen)} rows to the teacher, budget {n}"
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
    log.info("stage counters: %s", ", ".join(f"{k}={v}" for k, v in sorted(stages_done.items())))
    if isinstance(stages.teacher, ScoreWithTeacher):  # what its segments recorded, on any runner
        handler = stages.teacher.handler
        counts += usage.stage_counts(handler.setup.store, handler.run_id, staging)
    extra["teacher_usage"] = usage.teacher_usage(counts + driver_usage, cfg.teacher,
                                                 runners.not_counted(beam_args, remote_generation(cfg)))
    log.info("teacher: %(rows)d rows answered, %(cache_hits)d from the store (calls saved), "
             "%(calls)d model calls, %(retries)d retries", extra["teacher_usage"])
    return usage.throughput(counts), extra


def remote_generation(cfg: Config) -> bool:
    """Generation through the teacher's remote endpoint: counted by Beam metrics only."""
    return cfg.generation.enabled and cfg.teacher.backend == "openai"


def split_budget(calls: int, rounds: int) -> list[int]:
    """Teacher calls per round: as equal as possible, earlier rounds taking the remainder."""
    return [calls // rounds + (1 if r < calls % rounds else 0) for r in range(rounds)]


def _staged_scored(cfg: Config, staging: Path, pattern: str = "scored", columns=None):
    return job.read_staged(staging, pattern, contract.scored_schema(contract.optional_columns(cfg)),
                           columns)


def chosen_ids(cfg: Config, staging: Path, index: int) -> list[str]:
    """The pool rows round `index` sent to the teacher, from its staged scored shard."""
    rows = _staged_scored(cfg, staging, f"scored-r{index}-", ["id", "source"]).to_pylist()
    return [r["id"] for r in rows if r["source"] != "seed"]


def retrain_student(cfg: Config, staging: Path, seeds: list[Record], out_dir: Path) -> dict:
    """Stage one again, between budget rounds: seed rows plus every teacher-labelled pool row."""
    from potstill.models.student.signals import train_student
    from potstill.rows.records import model_input

    scored = _staged_scored(cfg, staging, columns=["text", "label_probs", "source", "choices"])
    rows = [r for r in scored.to_pylist() if r["source"] != "seed"]
    labelled = [(model_input(r["text"], r.get("choices")), r["label_probs"]) for r in rows]
    train_student(cfg.student, cfg.task.labels, seeds, labelled, out_dir, seed=cfg.signals.seed)
    return {"seed_rows": len(seeds), "teacher_rows": len(labelled)}
