"""Which runner the job runs on, and what it lacks: said at start, before any model loads.

`--runner=DaskRunner` (or Beam's full class name) becomes potstill's fixed DaskRunner
(beam_pipelines/dask_runner.py). Every stage runs on it (the tests run the default job and a
teacher budget in two rounds, whose chosen rows are a side input, and compare them with the
DirectRunner's); what it does not do is report Beam metrics. The manifest's teacher usage does
not need them (it is read from the teacher store: beam_pipelines/usage.py), but generation's
requests to a remote endpoint are only counted by them: `not_counted` says so in the manifest,
and the job says so when it starts.
"""
from __future__ import annotations

DASK = "potstill.beam_pipelines.dask_runner.DaskRunner"
_DASK_NAMES = {"dask", "daskrunner", "apache_beam.runners.dask.dask_runner.daskrunner", DASK.lower()}
NOT_COUNTED = "generation's requests to the endpoint: the runner reports no Beam metrics (DaskRunner)"


def runner_name(beam_args: list[str]) -> str | None:
    """The value of the last --runner flag (Beam's parser takes the last one)."""
    found = None
    for i, a in enumerate(beam_args):
        if a.startswith("--runner="):
            found = a.split("=", 1)[1]
        elif a == "--runner" and i + 1 < len(beam_args):
            found = beam_args[i + 1]
    return found


def is_dask(beam_args: list[str]) -> bool:
    return (runner_name(beam_args) or "").lower() in _DASK_NAMES


def reports_metrics(beam_args: list[str]) -> bool:
    return not is_dask(beam_args)


def not_counted(beam_args: list[str], remote_generation: bool) -> str | None:
    """What the manifest's `teacher_usage.remote` cannot count on this runner, if anything."""
    return NOT_COUNTED if remote_generation and not reports_metrics(beam_args) else None


def resolve(beam_args: list[str]) -> list[str]:
    """The runner flags to use: Beam's DaskRunner swapped for potstill's."""
    if not is_dask(beam_args):
        return list(beam_args)
    out, skip = [], False
    for a in beam_args:
        if skip or a.startswith("--runner="):
            skip = False
            continue
        skip = a == "--runner"
        if not skip:
            out.append(a)
    return out + [f"--runner={DASK}"]
