"""Torch threads per worker: cores / worker processes, whatever the runner flags."""
import pytest

from potstill.beam_pipelines.threads import torch_threads


@pytest.mark.parametrize("args, cores, expected", [
    ([], 2, 2),                                                                    # one worker
    (["--direct_num_workers=2", "--direct_running_mode=multi_processing"], 2, 1),
    (["--direct_num_workers=2", "--direct_running_mode=multi_threading"], 8, 4),
    (["--runner=DirectRunner", "--direct_num_workers=0"], 16, 1),                  # one per core
    (["--direct_num_workers=3"], 2, 1),                                            # never 0
    (["--runner=DataflowRunner"], 8, 1),                                           # one SDK per vCPU
    (["--runner=DataflowRunner", "--experiments=no_use_multiple_sdk_containers"], 8, None),
    (["--runner=FlinkRunner"], 8, None),                                           # one SDK process
    (["--runner=FlinkRunner", "--sdk_worker_parallelism=4"], 8, 1),
    (["--runner=apache_beam.runners.dask.dask_runner.DaskRunner"], 8, 1),
])
def test_threads_never_oversubscribe(args, cores, expected):
    assert torch_threads(None, args, cores=cores) == expected


def test_configured_threads_win():
    assert torch_threads(3, ["--direct_num_workers=2"], cores=2) == 3


def test_the_teacher_setup_takes_the_share_unless_the_config_sets_threads(tiny_lm):
    from potstill.models.teacher.teacher_setup import TeacherSetup
    from potstill.config.core import parse_config

    base = {"dataset": "d", "task": {"labels": ["a", "b"]}, "corpus": {"unlabeled": {"path": "u.jsonl"}}}
    share = torch_threads(None, ["--direct_num_workers=2"], cores=2)
    assert TeacherSetup.from_config(parse_config(base), tiny_lm, threads=share).threads == 1
    configured = parse_config({**base, "teacher": {"threads": 3}})
    assert TeacherSetup.from_config(configured, tiny_lm, threads=share).threads == 3
