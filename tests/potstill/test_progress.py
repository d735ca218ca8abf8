"""Progress lines: rate-limited, with done/total, rate and ETA, whole lines only."""
import io

from potstill.progress import Progress, duration


def test_progress_is_rate_limited_and_ends_with_the_total():
    now = [0.0]
    out = io.StringIO()
    p = Progress("train", total=1000, stream=out, every_s=10, clock=lambda: now[0])
    for _ in range(100):  # 100 updates over 50 s: the first, one per 10 s, and the last
        now[0] += 0.5
        p.update(10, note="epoch 1/1")
    p.close()
    lines = out.getvalue().splitlines()
    assert 4 <= len(lines) <= 7, lines
    assert lines[0].startswith("train: 10/1000 rows (1%), 20.0 rows/s") and "ETA 50s" in lines[0]
    assert lines[-1].startswith("train: 1000/1000 rows (100%)") and "ETA" not in lines[-1]
    assert all("\r" not in l for l in lines) and lines[-1].endswith("epoch 1/1")


def test_duration():
    assert (duration(5), duration(65), duration(3700)) == ("5s", "1m05s", "1h01m")


def test_record_handlers_count_a_batchs_text_not_its_pickle():
    """RunInference's byte metric: the rows' text lengths, for records and canonical batches."""
    import apache_beam.ml.inference.base as base

    from potstill.rows.records import Record
    from potstill.transforms.classifier import ClassifierModelHandler
    from potstill.transforms.progress import TextBytes
    from potstill.transforms.saliency import SaliencyModelHandler
    from potstill.transforms.signals import StudentModelHandler, TAModelHandler
    from potstill.transforms.teacher import TeacherModelHandler

    rows = [Record(str(i), "x" * (i + 1), "corpus", None, f"u:{i}").with_values(big=list(range(500)))
            for i in range(4)]
    for handler in (ClassifierModelHandler, SaliencyModelHandler, StudentModelHandler, TAModelHandler,
                    TeacherModelHandler):
        assert issubclass(handler, TextBytes) and issubclass(handler, base.ModelHandler)
        assert handler.get_num_bytes is TextBytes.get_num_bytes
    assert TextBytes().get_num_bytes(rows) == 1 + 2 + 3 + 4
    assert TextBytes().get_num_bytes([tuple(rows[:2]), tuple(rows[2:])]) == 10
