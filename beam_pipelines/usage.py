"""What the teacher did in a run, from what its stage recorded in the teacher store.

Every segment the teacher stage writes keeps what its batch cost, under the stage's run id
(potstill/store.py `WriteUsage`); `stage_counts` sums this run's records after the pipeline, and
counts the rows the store answered (`cache_hits`) from the staged keys: the staged rows whose
key no segment of this run holds. The numbers therefore come from files, not from Beam metrics,
and are the same on every runner (in-process or multi-process DirectRunner, DaskRunner, which
reports no metrics). Beam metrics remain only for generation through a remote endpoint (it
writes no segment: `remote_counters`); on a runner without them those requests are not counted,
and `teacher_usage.remote.not_counted` says so.

`teacher_usage` is the manifest's record of cost:

- `rows`: pool rows answered (by the model or the store; a row given up, rejected as
  `teacher_error`, is not answered: it is in `rows_failed`); `cache_hits`: those the teacher
  store answered (each one a call saved);
- `calls`: what was sent to the model. In process (hf, vllm): rows, every attempt of a batch
  counted. Remote (`teacher.backend: openai`): HTTP requests, every attempt counted, the
  audit's and generation's included (what the server received, less the few start-up checks);
  a row answered once is never sent again, so the handler's re-tries of a batch cost only its
  unanswered rows;
- `retries`: in process, batches tried again after a failure; remote, HTTP requests sent again
  (429, 5xx, 408, timeout, connection, malformed JSON), and the handler's batch re-tries are
  `batch_retries`;
- `prompt_tokens`: the prompt tokens of the rows the model was asked about, each row once.

With a remote teacher it adds `remote`: HTTP requests, retries by cause, requests given up, the
tokens the server billed (generation included) and, with `teacher.endpoint.price_per_million`,
their cost in USD. `throughput` is the model's rate, load time excluded.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from potstill import job
from potstill.store import TeacherStore
from potstill.transforms.teacher import NAMESPACE


def stage_counts(teacher_store: TeacherStore, run_id: str, staging: Path) -> Counter:
    """The teacher stage's counters for one run (every round of it): its segments' records
    summed (`rows_scored`, `rows_failed`, `calls`, `retries`, `prompt_tokens`, `micros`,
    `remote_*`), and `cache_hits`, the rows staged under `staging` (`keys` shards) whose key
    this run did not write."""
    records, written = teacher_store.run_usage(run_id)
    out: Counter = Counter()
    for r in records:
        out.update(rows_scored=r.rows, rows_failed=r.rows_failed, calls=r.calls,
                   retries=r.retries, prompt_tokens=r.prompt_tokens, micros=round(r.seconds * 1e6))
        out.update({f"remote_{k}": int(v) for k, v in r.remote.items()})
    for path in job.staged_files(staging, "keys"):
        keys = pq.read_table(path, columns=["key"])["key"]
        out["cache_hits"] += len(keys) - (pc.sum(pc.is_in(keys, value_set=written)).as_py() or 0)
    return out


def remote_counters(result) -> Counter:
    """The `remote_*` Beam counters of one pipeline result: generation's requests to a remote
    endpoint (transforms/generate.py); empty on a runner that reports no metrics."""
    return Counter({k: v for k, v in beam_counters(result, NAMESPACE).items() if k.startswith("remote_")})


def remote_counts(usage: dict) -> Counter:
    """A remote backend's own usage (`take_usage`, e.g. the audit's on the driver) as the
    counters the teacher stage keeps (potstill.transforms.teacher.count_remote_usage)."""
    return Counter({f"remote_{k}": v for k, v in usage.items()})


def teacher_usage(counts: Counter, teacher=None, not_counted: str | None = None) -> dict:
    """The manifest's `teacher_usage` (module docstring); `teacher`: the `teacher` settings (the
    backend, the endpoint's scoring and prices); `not_counted`: remote requests the counts lack."""
    out = {"rows": counts["rows_scored"] - counts["rows_failed"] + counts["cache_hits"],
           "rows_failed": counts["rows_failed"], "cache_hits": counts["cache_hits"],
           "calls": counts["calls"], "retries": counts["retries"],
           "prompt_tokens": counts["prompt_tokens"],
           "generated_tokens": counts["remote_completion_tokens"]}
    if teacher is not None and teacher.backend == "openai":
        e = teacher.endpoint
        remote = {k[len("remote_"):]: v for k, v in sorted(counts.items()) if k.startswith("remote_")}
        remote = {"requests": 0, "retries": 0, "failed_requests": 0, "prompt_tokens": 0,
                  "completion_tokens": 0, **remote}
        remote.update(model=e.model, scoring=e.scoring, approximate=e.scoring == "top_logprobs")
        if remote["approximate"]:
            remote["note"] = ("label_probs are approximate: from the top-k log-probs of the "
                              "answer's first token (README: Remote teachers)")
        if not_counted:
            remote["not_counted"] = not_counted
        if e.price_per_million is not None:
            remote["cost_usd"] = round((remote["prompt_tokens"] * e.price_per_million.prompt +
                                        remote["completion_tokens"] * e.price_per_million.completion)
                                       / 1e6, 6)
        out["remote"] = remote
        # what the server saw, not the handler's row attempts (answered rows are not re-sent)
        out.update(calls=remote["requests"], retries=remote["retries"], batch_retries=counts["retries"])
    return out


def throughput(counts: Counter) -> dict:
    """`teacher_rows`: rows the teacher stage answered (by the model or the store);
    the rate is the model's own: rows it scored / its seconds."""
    rows, seconds = counts["rows_scored"], counts["micros"] / 1e6
    if not rows or not seconds:
        return {}
    return {"teacher_rows": rows + counts["cache_hits"], "teacher_model_rows": rows,
            "teacher_seconds": round(seconds, 2), "teacher_rows_per_second": round(rows / seconds, 2)}


def stage_counters(result) -> Counter:
    """Every `potstill` counter of one pipeline result (rows read, rejected by reason, filtered,
    explained, generated, failed), for the run's closing summary."""
    return beam_counters(result, "potstill")


def beam_counters(result, namespace: str) -> Counter:
    """The committed Beam counters of `namespace` in one pipeline result, by name; empty on a
    runner that reports no metrics."""
    from apache_beam.metrics.metric import MetricsFilter

    out: Counter = Counter()
    try:
        metrics = result.metrics().query(MetricsFilter().with_namespace(namespace))
    except (NotImplementedError, AttributeError):  # some runners do not report metrics
        return out
    for c in metrics["counters"]:
        out[c.key.metric.name] += c.committed or 0
    return out
