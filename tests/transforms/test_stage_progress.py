"""Model-stage progress inside Beam: rows of at most how many, the model's rate, an ETA, and no
more than one line per interval."""
import logging

from potstill.transforms.progress import StageProgress


def test_progress_lines_are_rate_limited_and_carry_rate_and_eta(caplog):
    now = [0.0]
    progress = StageProgress("teacher", expected=100, every_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="potstill.progress"):
        now[0] = 5
        assert not progress.add(10, seconds=2.0)  # too soon after the start: no line
        now[0] = 12
        assert progress.add(10, seconds=2.0)
        now[0] = 13
        assert not progress.add(10, seconds=2.0)
    assert [r.getMessage() for r in caplog.records] == [
        "teacher: 20 of at most 100 rows (5.0 rows/s, ~16 s left)"]
    assert StageProgress("saliency").line() == "saliency: 0 rows (0.0 rows/s)"
