"""Which runner the job runs on, and what each cannot run: checked before any model loads.

`--runner=DaskRunner` (or Beam's full class name) becomes potstill's fixed DaskRunner
(beam_pipelines/dask_runner.py). A stage a runner cannot run stops the job at start, naming the
stage and the runner, instead of failing (or losing rows) halfway through.
"""
from __future__ import annotations

from potstill.config import Config, ConfigError

DASK = "beam_pipelines.dask_runner.DaskRunner"
_DASK_NAMES = {"dask", "daskrunner", "apache_beam.runners.dask.dask_runner.daskrunner", DASK.lower()}


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


def unsupported_stages(cfg: Config, beam_args: list[str]) -> list[str]:
    """The stages of this config the chosen runner cannot run, each with the reason."""
    if not is_dask(beam_args):
        return []
    out = []
    if cfg.generation.enabled:
        out.append("generation (its prompts read the seed and corpus pools as side inputs, which "
                   "DaskRunner evaluates inside worker tasks)")
    if cfg.budget.teacher_calls is not None:
        out.append("budget (the rows chosen for the teacher are a side input)")
    return out


def resolve(cfg: Config, beam_args: list[str]) -> list[str]:
    """The runner flags to use: Beam's DaskRunner swapped for potstill's; raises ConfigError
    naming each stage the runner cannot run."""
    stages = unsupported_stages(cfg, beam_args)
    if stages:
        raise ConfigError(f"runner {runner_name(beam_args)} cannot run these stages of the config: "
                          + "; ".join(stages) + ". Switch them off or use another runner "
                          "(DirectRunner, Dataflow, Flink, Spark).")
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
