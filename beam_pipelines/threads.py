"""Torch threads per worker process: the machine's cores divided by the processes (or worker
threads) that run model stages on it at once, so that the default never oversubscribes the CPU
(on 2 cores, a second busy process makes torch with 2 threads several times slower).

`teacher.threads` set in the config wins. Otherwise, from the runner flags:

| runner | model stages at once per machine | torch threads |
|---|---|---|
| DirectRunner (any `--direct_running_mode`) | `--direct_num_workers` (0 = one per core) | cores / that |
| DataflowRunner | one SDK process per vCPU (`no_use_multiple_sdk_containers`: one) | 1 (the worker's cores) |
| Flink, Spark, portable | `--sdk_worker_parallelism` (default 1; 0 = the runner decides) | the worker's cores when 1, else 1 |
| DaskRunner and others | not known from the flags | 1 |

"the worker's cores": None, and the worker takes its own `os.cpu_count()` (the launching
machine's count means nothing there).
"""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import (DebugOptions, DirectOptions, PipelineOptions,
                                                  PortableOptions, StandardOptions)

PORTABLE = ("FlinkRunner", "SparkRunner", "PortableRunner")


def torch_threads(configured: int | None, beam_args: list[str], cores: int | None = None) -> int | None:
    """Threads for every torch model of a worker process; None = all of the worker's cores."""
    if configured:
        return configured
    options = PipelineOptions(list(beam_args))
    runner = (options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1]
    if runner in ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"):
        cores = cores or os.cpu_count() or 1
        workers = options.view_as(DirectOptions).direct_num_workers or cores
        return max(1, cores // workers)
    if runner in ("DataflowRunner", "TestDataflowRunner"):
        single = "no_use_multiple_sdk_containers" in (options.view_as(DebugOptions).experiments or [])
        return None if single else 1
    if runner in PORTABLE:
        return None if options.view_as(PortableOptions).sdk_worker_parallelism == 1 else 1
    return 1
