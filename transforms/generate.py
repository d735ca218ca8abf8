"""The generation stage: label-conditioned new examples as Records with source="generated".

    {"seed": Records | None, "corpus": Records, "test": Records | None}
        | GenerateExamples(cfg.generation, labels, instruction, handler)
        -> {"records": Records (source=generated), "rejected": rejected rows}

Steps: a seeded sample of seed and corpus rows (the example pools, `POOL_SIZE` rows each, the
smallest hash(seed, id): deterministic, no RNG) -> prompts in fixed batches (each batch gets its
own torch seed, so outputs do not depend on how the runner bundles them) -> RunInference with
our GeneratorModelHandler -> parse each output and apply the per-text filters -> one global
step that drops exact and near duplicates against corpus, seed and test rows and each other.

Every output requested (per_label x labels) ends as a Record or a rejected row (reason and raw
output), and a batch the generator fails on sends each of its outputs to rejected as
`generation_error`, so the read count for source=generated is always per_label x labels.

Memory: the duplicate step gets every corpus, seed and test row's MinHash signature as a side
input (num_perm x 4 bytes: 0.5 KB at num_perm=128) and indexes them all on one worker, ~3.4 KB
per row with the LSH tables (measured at num_perm=128): ~4 GB for a million reference rows.
A smaller num_perm shrinks both, at the price of noisier similarity estimates.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from potstill.models.generation.generate import (Generation, HFGenerator, PromptSpec, Sampling, build_prompts,
                             format_messages, parse_output)
from potstill.models.teacher.backends import load_generator
from potstill.transforms.teacher import count_remote_usage, error_detail
from potstill.models.generation.text_filters import (DuplicateGuard, Reference, TextRules, Verdict, check_text,
                                 corpus_scripts, example_overlap, minhash)
from potstill.rows.records import Record, stable_id

log = logging.getLogger(__name__)
REJECTED = "rejected"
POOL_SIZE = 1000  # example pool per source; prompts draw their k examples from it


@dataclass(frozen=True)
class GenerationBatch:
    index: int
    seed: int                                # torch seed for this batch's generate call
    specs: tuple[PromptSpec, ...]
    conversations: tuple[tuple[dict, ...], ...]
    scripts: frozenset[str]                  # the corpus's scripts (for the script filter)


@dataclass(frozen=True)
class Candidate:
    order: tuple                             # (label position, prompt index, output index)
    record: Record
    signature: np.ndarray
    raw: str


def _hash_int(*parts) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def make_batches(_, seed_pool: Sequence[Record], corpus_pool: Sequence[Record], gen,
                 labels: Sequence[str], instruction: str | None) -> Iterable[GenerationBatch]:
    """All prompts, formatted, in fixed batches of gen.batch_size prompts."""
    seed_rows = sorted(seed_pool, key=lambda r: r.id)
    corpus_rows = sorted(corpus_pool, key=lambda r: r.id)
    by_label: dict[str, list[str]] = {}
    for r in seed_rows:
        by_label.setdefault(r.gold_label, []).append(r.text)
    specs = build_prompts(labels, gen.per_label // gen.outputs_per_prompt, gen.examples_per_prompt,
                          gen.example_source, by_label, [r.text for r in corpus_rows], gen.seed)
    scripts = corpus_scripts(r.text for r in seed_rows + corpus_rows)
    for b, start in enumerate(range(0, len(specs), gen.batch_size)):
        chunk = tuple(specs[start:start + gen.batch_size])
        convs = tuple(tuple(format_messages(s, labels, instruction, gen.prompt)) for s in chunk)
        yield GenerationBatch(b, _hash_int(gen.seed, b), chunk, convs, scripts)


class GeneratorModelHandler(ModelHandler[GenerationBatch, PredictionResult, HFGenerator]):
    """Loads the generator once per worker; one element is one pre-made batch of prompts."""

    def __init__(self, model_path: str, sampling: Sampling, *, dtype: str = "float32",
                 threads: int | None = None, backend: str = "hf", engine=None):
        super().__init__()
        self.model_path, self.sampling = model_path, sampling
        self.kwargs = dict(dtype=dtype, threads=threads, backend=backend, engine=engine)

    def load_model(self) -> HFGenerator:
        start = time.perf_counter()
        model = load_generator(self.model_path, **self.kwargs)
        log.info("generator loaded from %s in %.1fs", self.model_path, time.perf_counter() - start)
        return model

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": 1}  # elements are batches already

    def run_inference(self, batch: Sequence[GenerationBatch], model: HFGenerator,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        out = []
        for b in batch:
            start = time.perf_counter()
            sampling = replace(self.sampling, seed=b.seed)
            gens = model.generate([list(c) for c in b.conversations], sampling)
            count_remote_usage(model)  # generation through a remote endpoint counts as teacher usage
            n = sum(len(g) for g in gens)
            Metrics.counter("potstill", "generated_outputs").inc(n)
            log.info("generator: batch %d, %d outputs in %.1fs", b.index, n, time.perf_counter() - start)
            out.append(PredictionResult(b, gens))
        return out

    def get_metrics_namespace(self) -> str:
        return "potstill_generator"


def rejected_row(ref: str, reason: str, detail: str | None, raw: str | None) -> dict:
    Metrics.counter("potstill", f"generated_rejected_{reason}").inc()
    return {"source": "generated", "input_ref": ref, "reason": reason, "detail": detail,
            "raw": None if raw is None else raw[:2000]}


def parse_and_check(result: PredictionResult, labels: Sequence[str], rules: TextRules,
                    num_perm: int, drop_truncated: bool = True, max_example_overlap: float = 1.0):
    """Outputs of one batch -> Candidates, or rejected rows (TaggedOutput) with their reason."""
    batch: GenerationBatch = result.example
    rules = replace(rules, scripts=batch.scripts or None)
    label_pos = {l: i for i, l in enumerate(labels)}
    for spec, gens in zip(batch.specs, result.inference):
        for j, gen in enumerate(gens):
            ref = f"{spec.ref}:{j}"
            parsed = parse_output(gen.text, labels, truncated=gen.truncated and drop_truncated)
            if not parsed.ok:
                yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(ref, parsed.reason, parsed.detail, gen.text))
                continue
            verdict = check_text(parsed.text, rules)
            overlap = 0.0 if verdict else example_overlap(parsed.text, spec.labelled + spec.unlabeled)
            if overlap > max_example_overlap:
                verdict = Verdict("copied_example", f"{overlap:.0%} of its 5-grams are in one of "
                                                    f"its prompt's examples > {max_example_overlap:.0%}")
            if verdict:
                yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(ref, verdict.reason, verdict.detail, gen.text))
                continue
            record = Record(stable_id(parsed.text), parsed.text, "generated", None, ref,
                            intended_label=spec.label)
            yield Candidate((label_pos[spec.label], spec.index, j), record,
                            minhash(parsed.text, num_perm), gen.text)


def drop_duplicates(keyed, references: Iterable[Reference], threshold: float, num_perm: int):
    """All candidates at once (one key): the survivors, in order; the rest to rejected."""
    _, candidates = keyed
    guard = DuplicateGuard(references, threshold, num_perm)
    for c in sorted(candidates, key=lambda c: c.order):
        verdict = guard.check(c.record.id, c.signature)
        if verdict:
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_row(c.record.input_ref, verdict.reason,
                                                                  verdict.detail, c.raw))
        else:
            Metrics.counter("potstill", "generated_kept").inc()
            yield c.record


def failed_batches(failure, n: int) -> list[dict]:
    """A batch the generator failed on: each output it owed goes to rejected with the error."""
    batches, exc = failure
    detail = error_detail(exc)  # redacted, then cut
    return [rejected_row(f"{spec.ref}:{j}", "generation_error", detail, None)
            for b in batches for spec in b.specs for j in range(n)]


class GenerateExamples(beam.PTransform):
    def __init__(self, gen, labels: Sequence[str], instruction: str | None,
                 handler: GeneratorModelHandler):
        super().__init__()
        self.gen, self.labels, self.instruction, self.handler = gen, list(labels), instruction, handler

    def expand(self, inputs: dict):
        gen, p = self.gen, inputs["corpus"].pipeline

        def pool(name):
            pcoll = inputs.get(name)
            if pcoll is None:
                return p | f"No{name.title()}Pool" >> beam.Create([[]])
            return pcoll | f"{name.title()}Pool" >> beam.combiners.Top.Of(
                POOL_SIZE, key=lambda r, s=gen.seed: _hash_int(s, r.id), reverse=True)

        batches = (p | "Start" >> beam.Create([None])
                   | "Prompts" >> beam.FlatMap(make_batches, beam.pvalue.AsSingleton(pool("seed")),
                                               beam.pvalue.AsSingleton(pool("corpus")), gen,
                                               self.labels, self.instruction)
                   | "SpreadBatches" >> beam.Reshuffle())
        results, errors = batches | "Generate" >> RunInference(self.handler).with_exception_handling()
        rules = TextRules(min_chars=gen.min_chars, max_chars=gen.max_chars,
                          min_letter_share=gen.min_letter_share,
                          max_repeated_ngram_ratio=gen.max_repeated_ngram_ratio,
                          avoid_words=tuple(self.labels) if gen.drop_label_mentions else ())
        checked = results | "ParseAndCheck" >> beam.FlatMap(
            parse_and_check, self.labels, rules, gen.num_perm, gen.drop_truncated,
            gen.max_example_overlap).with_outputs(REJECTED, main="candidates")

        refs = [inputs[k] | f"Signatures{k.title()}" >> beam.Map(
                    lambda r, n=gen.num_perm: Reference(r.source, r.id, minhash(r.text, n)))
                for k in ("corpus", "seed", "test") if inputs.get(k) is not None]
        refs = refs | "AllReferences" >> beam.Flatten()
        unique = (checked.candidates
                  | "OneGroup" >> beam.Map(lambda c: (None, c))
                  | "Together" >> beam.GroupByKey()
                  | "DropDuplicates" >> beam.FlatMap(drop_duplicates, beam.pvalue.AsList(refs),
                                                     gen.near_dup_threshold, gen.num_perm)
                  .with_outputs(REJECTED, main="records"))
        failed = errors.failed_inferences | "FailedBatches" >> beam.FlatMap(
            failed_batches, gen.outputs_per_prompt)
        rejected = ((checked[REJECTED], unique[REJECTED], failed)
                    | "GeneratedRejected" >> beam.Flatten())
        return {"records": unique.records, "rejected": rejected}
