"""The collector's thresholds while a job runs (potstill/memory.py `fewer_collections`)."""
import gc

import pytest

from potstill import memory


@pytest.fixture
def thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_raised_inside_and_restored_after(thresholds):
    gc.set_threshold(700, 10, 10)
    with memory.fewer_collections():
        assert gc.get_threshold() == memory.JOB_THRESHOLDS
    assert gc.get_threshold() == (700, 10, 10)


def test_restored_when_the_block_fails(thresholds):
    gc.set_threshold(700, 10, 10)
    with pytest.raises(KeyError):
        with memory.fewer_collections():
            raise KeyError("x")
    assert gc.get_threshold() == (700, 10, 10)


def test_never_more_often_than_the_process_had_them(thresholds):
    gc.set_threshold(200_000, 5, 500)
    with memory.fewer_collections((50_000, 20, 100)):
        assert gc.get_threshold() == (200_000, 20, 500)
    assert gc.get_threshold() == (200_000, 5, 500)


def test_a_job_runs_with_them_and_restores_them(thresholds, monkeypatch):
    """`potstill.beam_pipelines.pipeline.run`, stopped by an error at its first step."""
    from potstill.beam_pipelines import pipeline

    seen = []

    def resolve(args):
        seen.append(gc.get_threshold())
        raise RuntimeError("stop here")

    monkeypatch.setattr(pipeline.runners, "resolve", resolve)
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError, match="stop here"):
        pipeline.run(object())
    assert seen == [memory.JOB_THRESHOLDS]
    assert gc.get_threshold() == (700, 10, 10)


class _Node:
    def __init__(self):
        self.me = self  # a cycle: only the collector frees it


def test_frozen_heap_still_frees_what_the_block_allocated():
    import weakref

    assert gc.get_freeze_count() == 0
    with memory.frozen_heap():
        assert gc.get_freeze_count() > 0
        ref = weakref.ref(_Node())
        assert ref() is not None
        memory.release()
        assert ref() is None
    assert gc.get_freeze_count() == 0


def test_frozen_heap_leaves_an_outer_freeze_in_place():
    gc.freeze()
    try:
        outer = gc.get_freeze_count()
        with memory.frozen_heap():
            pass
        assert gc.get_freeze_count() >= outer
    finally:
        gc.unfreeze()


def test_frozen_heap_unfreezes_when_the_block_fails():
    with pytest.raises(ValueError):
        with memory.frozen_heap():
            raise ValueError("x")
    assert gc.get_freeze_count() == 0
