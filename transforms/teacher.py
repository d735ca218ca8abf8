"""Teacher label scoring inside Beam, answered from the teacher store whenever it can be.

    records -> Requests (prompt + key, no weights) -> the store's answers by key
        answered   -> the stored raw candidate log-probs                      (no model call)
        unanswered -> canonical batches -> RunInference(TeacherModelHandler) -> new segments
    -> label sums, option masks, calibration, contract statistics (`Scores`)

With a store of at most `teacher.store_lookup_answers` answers (default 4,000,000: a first run's,
or a rerun's of a million rows), each worker process holds the answers in memory
(`store.Answers`, ~190 bytes an answer) and records are grouped for their batches before they
are encoded (`EncodeGroups`): the graph's only shuffle after deduplication holds packed records
without their requests. A larger store is joined with every row's request by key
(CoGroupByKey), then the unanswered rows are grouped. Both cut the same batches.

Canonical batches make scores batch-invariant across runs: the rows still to answer are grouped
by (shared prompt part, hash(id) mod P) and each group, sorted by (length, tokens, id), is cut
into `batch_size` chunks. A chunk's rows, and so its numbers, depend only on which rows need an
answer, never on arrival order or bundle boundaries; a chunk is stored whole or not at all, so
after a crash the rows still missing form the same chunks again and a resumed run publishes what
an uninterrupted one would have.

What the stage spends is kept in the store too, not in Beam metrics (which some runners do not
report): each canonical batch's segment records its rows, calls, retries, prompt tokens, failed
rows, model seconds and a remote backend's HTTP counts under the stage's `run_id`
(potstill/store.py `WriteUsage`); beam_pipelines/usage.py sums them after the pipeline.
"""
from __future__ import annotations

import hashlib
import logging
import time
import uuid
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.utils.shared import Shared

from potstill.models.teacher.requests import Request, answer_in_halves, encode_requests
from potstill.models.teacher.hf import label_stats, normalise
from potstill.models.teacher.remote_redact import redact
from potstill.models.teacher.teacher_setup import LabelledTeacher, TeacherSetup
from potstill import store
from potstill.transforms.progress import StageProgress, TextBytes
from potstill.transforms.shuffle import pack, unpack_all
from potstill.rows.records import Record

log = logging.getLogger(__name__)
NAMESPACE = "potstill_teacher"
ENCODE_ROWS = 256  # rows encoded together (EncodeRequests, EncodeGroups): the embedder's batches
SCORE_ROWS = 256   # rows whose label scores are computed together (Scores)


def n_options(record: Record, n_labels: int) -> int:
    return len(record.choices) if record.choices else n_labels


class EncodeRequests(beam.DoFn):
    """Adds each record's `Request` (tokenizer and demonstrations only: no weights loaded) and
    keys it by the request's store key. Records are encoded `rows` at a time, shortest texts
    together (the demonstration selector embeds them in batches: `encode_requests`), and go on
    when their chunk is done or the bundle ends."""

    def __init__(self, setup: TeacherSetup, rows: int = ENCODE_ROWS):
        self.teacher_setup, self.rows = setup, rows
        # the demonstration selector's own time (its embedder is a model: benchmarks/scale.py)
        self.selection_micros = Metrics.counter(NAMESPACE, "demo_selection_micros")

    def setup(self):
        self.lt = self.teacher_setup.prompter()

    def start_bundle(self):
        self.pending: list[Record] = []

    def process(self, record: Record):
        self.pending.append(record)
        if len(self.pending) >= self.rows:
            yield from self._flush()

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        for keyed in self._flush():
            yield WindowedValue(keyed, 0, [GlobalWindow()])

    def _flush(self) -> list[tuple[str, Record]]:
        chunk, self.pending = self.pending, []
        return encode_chunk(self.lt, chunk, self.selection_micros)


def encode_chunk(lt, records: Sequence[Record], selection_micros) -> list[tuple[str, Record]]:
    """`records` with their `Request`s, keyed by store key: shortest texts together, their
    demonstrations chosen at once (`selection_micros`: the counter of the selector's time)."""
    if not records:
        return []
    chunk = sorted(records, key=lambda r: len(r.model_input))
    texts = [r.model_input for r in chunk]
    start = time.perf_counter()
    demos = lt.demos(texts)
    selection_micros.inc(round((time.perf_counter() - start) * 1e6))
    requests = encode_requests(lt, texts, demos)
    return [(q.key, r.with_values(request=q)) for r, q in zip(chunk, requests)]


class EncodeGroups(beam.DoFn):
    """(group, packed records) -> the group's canonical batches of rows the store has not
    answered (main), and its rows with their stored answers (`answered`).

    The graph with a store small enough to look up from memory: records are grouped *before*
    they are encoded, so the batches' shuffle holds each record without its request (the
    prompt's token ids: most of a request's bytes), and the group's rows are encoded here, in
    id order, `ENCODE_ROWS` at a time. The batches are the ones `batch_group` and
    `canonical_batches` cut: a group is `hash(id) mod P`, split here by shared prompt part."""

    def __init__(self, setup: TeacherSetup, segments: Sequence[str], rows: int = ENCODE_ROWS):
        self.teacher_setup, self.segments, self.rows = setup, list(segments), rows
        self.selection_micros = Metrics.counter(NAMESPACE, "demo_selection_micros")
        self.shared = Shared()  # the answers: read once per worker process, not per DoFn copy

    def setup(self):
        self.lt = self.teacher_setup.prompter()
        tag = hashlib.sha256("\n".join(self.segments).encode()).hexdigest()
        self.answers = self.shared.acquire(lambda: store.Answers(self.segments), tag=tag)

    def process(self, group):
        part, packed = group
        records = sorted(unpack_all(packed), key=lambda r: r.id)
        unanswered: dict[str, list[Record]] = {}
        for start in range(0, len(records), self.rows):
            keyed = encode_chunk(self.lt, records[start:start + self.rows], self.selection_micros)
            for (key, record), answer in zip(keyed, self.answers.get_many([k for k, _ in keyed])):
                if answer is None:
                    unanswered.setdefault(record.value("request").shared or "none", []).append(record)
                else:
                    yield beam.pvalue.TaggedOutput("answered", record.with_values(raw_candidates=answer))
        for shared in sorted(unanswered):
            yield from canonical_batches(((shared, part), unanswered[shared]), self.teacher_setup.batch_size)


class SplitAnswered(beam.DoFn):
    """(key, {records (packed), answers}) -> records with their stored answer (main) or `unanswered`."""

    def process(self, joined):
        _, grouped = joined
        answer = next(iter(grouped["answers"]), None)
        for record in unpack_all(grouped["records"]):
            yield (record.with_values(raw_candidates=answer) if answer is not None
                   else beam.pvalue.TaggedOutput("unanswered", record))


def batch_part(record: Record, partitions: int) -> int:
    return int(hashlib.sha256(record.id.encode()).hexdigest()[:8], 16) % partitions


def batch_group(record: Record, partitions: int) -> tuple[str, int]:
    return (record.value("request").shared or "none", batch_part(record, partitions))


def partitions(expected_rows: int, batch_size: int) -> int:
    """P of the canonical batches: groups of about 32 batches, so that sorting by length inside
    a group leaves little padding (padding_waste: 1.05 on Reuters R8 articles, README
    "Performance") while no group has to be held whole by one worker for long."""
    return expected_rows // (batch_size * 32) + 1


def padding_waste(batches: Iterable[Sequence[Record]]) -> float:
    """Padded / real row tokens of `batches` (each batch is padded to its longest row)."""
    lengths = [[r.value("request").n_ids for r in b] for b in batches]
    return sum(len(l) * max(l) for l in lengths if l) / max(1, sum(sum(l) for l in lengths))


def canonical_batches(group, batch_size: int) -> Iterable[tuple[Record, ...]]:
    """One group's records sorted by (length, tokens, id), cut into `batch_size` chunks."""
    _, records = group
    ordered = sorted(records, key=lambda r: (*r.value("request").order(), r.id))
    for start in range(0, len(ordered), batch_size):
        yield tuple(ordered[start:start + batch_size])


def take_remote_usage(backend) -> dict[str, int]:
    """A remote backend's HTTP requests, retries and billed tokens since the last call (none
    for an in-process backend)."""
    take = getattr(backend, "take_usage", None)
    return {name: int(value) for name, value in take().items()} if take is not None else {}


def count_remote_usage(backend) -> None:
    """`take_remote_usage` into Beam counters (`remote_*`, read by beam_pipelines/usage.py): for
    generation through the endpoint, which writes no store segment. Counted here, in the
    bundle's thread: the backend's own threads have no Beam metrics context."""
    for name, value in take_remote_usage(backend).items():
        Metrics.counter(NAMESPACE, f"remote_{name}").inc(value)


class TeacherModelHandler(TextBytes, ModelHandler[tuple, list, LabelledTeacher]):
    """Loads the teacher once per worker (the driver's `TeacherSetup`; weights shared with the
    other stages of the process) and answers canonical batches (one element = one batch): each
    answered batch is appended to the teacher store before the rows move on, so a crash loses
    at most the batch in flight. Failed batches are retried, then split (models/teacher/requests.py).
    `run_id` marks the segments this handler writes, with what each batch cost (`WriteUsage`):
    one id per built stage, shared by every worker it is shipped to."""

    def __init__(self, setup: TeacherSetup, *, retries: int = 2,
                 backoff_s: float = 0.5, expected_rows: int | None = None,
                 progress_every_s: float = 15.0):
        super().__init__()
        self.setup = setup
        self.retries, self.backoff_s = retries, backoff_s
        self.progress = StageProgress("teacher", expected_rows, progress_every_s)
        self.run_id = uuid.uuid4().hex

    def load_model(self) -> LabelledTeacher:
        start = time.perf_counter()
        teacher = self.setup.load()
        log.info("teacher ready (%s) in %.1fs", self.setup.model_path, time.perf_counter() - start)
        return teacher

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": 1}  # elements are canonical batches

    def run_inference(self, batches: Sequence[tuple], model: LabelledTeacher,
                      inference_args: dict | None = None) -> Iterable[list]:
        return [self._answer(list(batch), model) for batch in batches]

    def _answer(self, batch: list[Record], model: LabelledTeacher) -> list[Record]:
        start = time.perf_counter()
        requests: list[Request] = [r.value("request") for r in batch]
        done = answer_in_halves(requests, lambda rs: model.teacher.score_encoded([q.encoded for q in rs]),
                                retries=self.retries, backoff_s=self.backoff_s)
        seconds = time.perf_counter() - start
        answered = [(requests[i], a) for idx, answers in done.batches for i, a in zip(idx, answers)]
        cost = store.WriteUsage(
            self.run_id, rows=len(batch), calls=done.calls, retries=done.retries,
            rows_failed=sum(isinstance(r, BaseException) for r in done.results),
            prompt_tokens=sum(q.prompt_tokens for q in requests), seconds=round(seconds, 6),
            remote=take_remote_usage(model.teacher))
        # one segment per canonical batch, written even when every row failed: it keeps the cost
        self.setup.store.write([q.key for q, _ in answered], [a for _, a in answered],
                               [q.prompt_tokens for q, _ in answered], cost)
        self.progress.add(len(batch), seconds)
        out = []
        for record, result in zip(batch, done.results):
            if isinstance(result, BaseException):
                out.append(record.with_values(teacher_error=error_detail(result)))
            else:
                out.append(record.with_values(raw_candidates=[float(x) for x in result]))
        return out

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


class Scores(beam.DoFn):
    """Raw candidate log-probs -> the contract's teacher values: the label sums, option masks
    and calibration of `LabelledTeacher`, then confidence, entropy and margin; `SCORE_ROWS`
    rows at a time (one array operation each instead of one per row)."""

    def __init__(self, setup: TeacherSetup, keep_raw: bool):
        self.teacher_setup, self.keep_raw = setup, keep_raw

    def setup(self):
        self.lt = self.teacher_setup.prompter()

    def start_bundle(self):
        self.pending: list[Record] = []

    def process(self, record: Record):
        self.pending.append(record)
        if len(self.pending) >= SCORE_ROWS:
            yield from self._flush()

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        for record in self._flush():
            yield WindowedValue(record, 0, [GlobalWindow()])

    def _flush(self) -> list[Record]:
        """The pending rows' values, computed together (each row's are its own: the label sums,
        masks and calibration are row by row)."""
        if not self.pending:
            return []
        chunk, self.pending = self.pending, []
        labels = list(self.teacher_setup.labels)
        cand = np.asarray([r.value("raw_candidates") for r in chunk], dtype=np.float64)
        raw, calibrated = self.lt.from_candidates(cand, [n_options(r, len(labels)) for r in chunk])
        stats = label_stats(calibrated, labels)
        if self.keep_raw:
            for row, probs in zip(stats, normalise(raw).astype("float32")):
                row["label_probs_raw"] = probs.tolist()
        if self.teacher_setup.backend == "openai":  # contract: teacher_outside_mass
            for row, covered in zip(stats, np.exp(cand).sum(axis=1)):
                row["teacher_outside_mass"] = min(1.0, max(0.0, 1.0 - float(covered)))
        return [r.with_values(**row) for r, row in zip(chunk, stats)]


def error_detail(exc: BaseException) -> str:
    """A rejected row's `detail`: the error, redacted (models/teacher/remote_redact.py), then cut."""
    return redact(f"{type(exc).__name__}: {exc}")[:500]


def failed_row(record: Record) -> dict:
    """A row the teacher could not answer, even alone after retries: rejected with the error."""
    return {"source": record.source, "input_ref": record.input_ref, "reason": "teacher_error",
            "detail": record.value("teacher_error"), "raw": record.text[:2000]}


def failed_batch_rows(failure) -> list[dict]:
    """A whole batch the handler itself failed on (not the model): every row rejected. A store
    that cannot keep the answers stops the job instead (its StoreError names the folder): those
    rows are not bad, and a version without them would be a smaller dataset for no reason."""
    batch, exc = failure
    kind, message = dead_letter(exc)
    if issubclass(kind, store.StoreError):
        raise store.StoreError(message)
    return [{"source": r.source, "input_ref": r.input_ref, "reason": "teacher_error",
             "detail": redact(f"{kind.__name__}: {message}")[:500], "raw": r.text[:2000]}
            for b in batch for r in b]


def dead_letter(exc) -> tuple[type, str]:
    """The error's class and message: Beam's exception handling hands on (class, repr,
    traceback lines), whose last line is "module.Class: message"."""
    if isinstance(exc, BaseException):
        return type(exc), str(exc)
    kind, text, lines = exc
    last = lines[-1].strip() if lines else ""
    return kind, last.partition(": ")[2] if ": " in last else text


class ScoreWithTeacher(beam.PTransform):
    """Records -> Records with the teacher's columns (`scored`: a list of PCollections, the rows
    the store answered and those the model did) and rejected rows (`rejected`).

    The store's segments for this teacher are listed here, on the driver, when the graph is
    built; `partitions`: P of the canonical batches (`partitions(expected rows, batch)`). A store
    of at most `lookup_answers` answers is looked up from memory (`store.Answers`: ~190 MB of
    RSS a million answers, once per worker process), a larger one joined with every row by key
    (a shuffle: the in-process runner held a join of a million rows' requests in 5.2 GB)."""

    def __init__(self, handler: TeacherModelHandler, keep_raw: bool = False, partitions: int = 1, *,
                 lookup_answers: int):
        super().__init__()
        self.handler, self.segments = handler, handler.setup.store.segments()
        self.keep_raw, self.partitions = keep_raw, max(1, partitions)
        self.lookup_answers = lookup_answers

    def expand(self, records):
        setup = self.handler.setup
        held = store.answer_count(self.segments, self.lookup_answers)
        if held <= self.lookup_answers:
            log.info("teacher store: its %d answers are looked up in memory "
                     "(at most teacher.store_lookup_answers: %d)", held, self.lookup_answers)
            # A store this small is looked up from memory (a first run's holds the audit's
            # answers only): records are grouped for their batches first and encoded after
            # (EncodeGroups), so no shuffle holds a request, and none joins them with the store.
            grouped = (records
                       | "Group" >> beam.Map(lambda r, p: (batch_part(r, p), pack(r)), self.partitions)
                       | "GroupBatches" >> beam.GroupByKey()
                       | "EncodeGroups" >> beam.ParDo(EncodeGroups(setup, self.segments))
                       .with_outputs("answered", main="batches"))
            batches, stored = grouped.batches, grouped.answered
        else:
            log.info("teacher store: more than %d answers (teacher.store_lookup_answers), joined "
                     "with the rows by key", self.lookup_answers)
            answers = (records.pipeline | "StoreSegments" >> beam.Create(self.segments)
                       | "ReadStore" >> beam.FlatMap(store.read_segment))
            keyed = records | "Encode" >> beam.ParDo(EncodeRequests(setup))
            packed = keyed | "Pack" >> beam.Map(lambda kv: (kv[0], pack(kv[1])))
            split = ({"records": packed, "answers": answers} | "JoinStore" >> beam.CoGroupByKey()
                     | "SplitAnswered" >> beam.ParDo(SplitAnswered()).with_outputs("unanswered", main="answered"))
            batches = (split.unanswered
                       | "Group" >> beam.Map(lambda r, p: (batch_group(r, p), pack(r)), self.partitions)
                       | "GroupBatches" >> beam.GroupByKey()
                       | "Canonical" >> beam.FlatMap(lambda g, size: canonical_batches(
                           (g[0], unpack_all(g[1])), size), setup.batch_size))
            stored = split.answered
        answered, errors = batches | "RunInference" >> RunInference(self.handler).with_exception_handling()
        outcome = (answered | "Rows" >> beam.FlatMap(lambda rows: rows)
                   | "Failed" >> beam.Partition(lambda r, _: int(r.value("teacher_error") is not None), 2))
        # Two branches, never flattened: the in-process runner materialises a Flatten with
        # several inputs (every row of each in memory at once); apart, each branch is fused
        # from its source to the writers and streams.
        scored = [stored | "ScoresStored" >> beam.ParDo(Scores(setup, self.keep_raw)),
                  outcome[0] | "Scores" >> beam.ParDo(Scores(setup, self.keep_raw))]
        rejected = ((outcome[1] | "FailedRows" >> beam.Map(failed_row),
                     errors.failed_inferences | "FailedBatches" >> beam.FlatMap(failed_batch_rows))
                    | "AllRejected" >> beam.Flatten())
        return {"scored": scored, "rejected": rejected}
