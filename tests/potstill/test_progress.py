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
