"""sql/budget.sql (which rows the teacher scores) and sql/select.sql (LLKD selection, TA
weighting) on small crafted tables, with the rows each must keep and drop worked out by hand."""
import math

import pyarrow as pa
import pytest

from potstill.publish import contract
from potstill.config.core import Curation
from potstill.publish.curation import curate
from potstill.publish.selection import budget_ranking

LABELS = ["neg", "pos"]
LN2 = math.log(2)
CANDIDATES = pa.schema([("id", pa.string()), ("student_label", pa.string()),
                        ("student_entropy", pa.float64()), ("student_consistency", pa.float64())])


def candidates(rows):
    return pa.Table.from_pylist([dict(zip(CANDIDATES.names, r)) for r in rows], schema=CANDIDATES)


POOL = candidates([
    # id, predicted, entropy, consistency -> priority (entropy/ln2 + 1 - consistency) / 2
    ("a", "neg", 0.9 * LN2, 0.5),   # 0.70
    ("b", "neg", 0.5 * LN2, 1.0),   # 0.25
    ("c", "neg", 0.8 * LN2, 0.6),   # 0.60
    ("d", "pos", 0.2 * LN2, 1.0),   # 0.10
    ("e", "pos", 0.4 * LN2, 0.8),   # 0.30
    ("f", None, None, None),        # no signals: last
])


def test_need_ranking_lets_the_predicted_classes_take_turns():
    # turn 1: a (neg, 0.70), e (pos, 0.30); turn 2: c (neg, 0.60), d (pos, 0.10); turn 3: b
    assert budget_ranking(POOL, 2, "need", 0, 2) == ["a", "e"]
    assert budget_ranking(POOL, 4, "need", 0, 2) == ["a", "e", "c", "d"]
    assert budget_ranking(POOL, 6, "need", 0, 2) == ["a", "e", "c", "d", "b", "f"]


def test_budget_is_never_exceeded_and_zero_means_none():
    for n in range(0, 9):
        ids = budget_ranking(POOL, n, "need", 0, 2)
        assert len(ids) == min(n, POOL.num_rows) and len(set(ids)) == len(ids)
    assert budget_ranking(POOL, 0, "random", 0, 2) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        budget_ranking(POOL, -1, "need", 0, 2)


def test_random_strategy_is_seeded_and_ignores_signals():
    first = budget_ranking(POOL, 3, "random", 7, 2)
    assert first == budget_ranking(POOL, 3, "random", 7, 2)
    orders = {tuple(budget_ranking(POOL, 6, "random", seed, 2)) for seed in range(6)}
    assert len(orders) > 1  # the seed changes the draw


def test_an_edited_query_can_not_overspend(tmp_path):
    greedy = tmp_path / "greedy.sql"
    greedy.write_text("select id from candidates union all select id from candidates")
    with pytest.raises(ValueError, match="at most 2 distinct candidate ids"):
        budget_ranking(POOL, 2, "need", 0, 2, query=str(greedy))


# --- select.sql -------------------------------------------------------------------------

def staged(rows):
    """Contract rows with signals from (id, source, teacher_label, confidence, need, consistency,
    ta_teacher, ta_student, round)."""
    out = []
    for (i, source, label, conf, need, cons, ta_t, ta_s, rnd) in rows:
        p = conf if label == "pos" else 1 - conf
        out.append({"id": i, "text": f"text {i}", "label": label, "label_probs": [1 - p, p],
                    "teacher_label": label, "teacher_confidence": conf, "teacher_entropy": 0.5,
                    "teacher_margin": abs(2 * conf - 1), "gold_label": label if source == "seed" else None,
                    "source": source, "weight": 1.0, "student_label": label,
                    "student_confidence": 0.6, "student_entropy": None if need is None else need * LN2,
                    "student_consistency": cons, "ta_teacher_confidence": ta_t,
                    "ta_student_confidence": ta_s, "selection_round": rnd})
    return pa.Table.from_pylist(out, schema=contract.scored_schema(contract.SIGNAL_COLUMNS))


def select(table, **kwargs):
    return curate(table, LABELS, Curation(query="select.sql", **kwargs))


def reasons(result):
    return dict(zip(result.filtered["id"].to_pylist(), result.filtered["filter_reason"].to_pylist()))


ROUND_ONE = staged([
    # class pos: mean confidence 0.8, mean need 0.5
    ("p1", "corpus", "pos", 0.9, 0.7, 0.5, 0.9, 0.2, 1),   # sure and needed: kept
    ("p2", "corpus", "pos", 0.7, 0.8, 0.5, 0.5, 0.5, 1),   # teacher below 0.8: teacher_unsure
    ("p3", "corpus", "pos", 0.8, 0.0, 1.0, 0.1, 0.9, 1),   # student knows it: student_confident
    # class neg: mean confidence 0.6 (a hard class gets a lower bar), mean need 0.4
    ("n1", "corpus", "neg", 0.65, 0.5, 0.25, 0.8, 0.3, 1),  # kept (0.65 >= 0.6)
    ("n2", "corpus", "neg", 0.55, 0.3, 0.75, 0.2, 0.6, 1),  # teacher_unsure
    ("s1", "seed", "neg", 0.51, 0.0, 1.0, None, None, 1),   # seed: always kept, weight 1
])


def test_llkd_keeps_rows_above_their_own_class_averages():
    result = select(ROUND_ONE, ta_weighting=False)
    assert sorted(result.published["id"].to_pylist()) == ["n1", "p1", "s1"]
    assert reasons(result) == {"p2": "llkd_teacher_unsure", "p3": "llkd_student_confident",
                               "n2": "llkd_teacher_unsure"}
    assert result.published["weight"].to_pylist() == [1.0, 1.0, 1.0]


def test_scales_move_the_thresholds_and_zero_switches_need_off():
    loose = select(ROUND_ONE, ta_weighting=False, confidence_scale=0.85, need_scale=0.0)
    # pos bar 0.68: p2 (0.7) passes; neg bar 0.51: n2 (0.55) passes; need is off: p3 passes
    assert reasons(loose) == {}
    off = select(ROUND_ONE, llkd=False, ta_weighting=False)
    assert off.filtered.num_rows == 0


def test_ta_weights_follow_the_formula():
    result = select(ROUND_ONE, llkd=False, weight_floor=0.2)
    weight = dict(zip(result.published["id"].to_pylist(), result.published["weight"].to_pylist()))
    # pos rows ranked by ta_teacher (p3 0.1 < p2 0.5 < p1 0.9) -> trust 0, 0.5, 1;
    # by ta_student (p1 0.2 < p2 0.5 < p3 0.9) -> doubt 1, 0.5, 0; unsure = 1 - consistency
    expected = {"p1": (1 + 1 + 0.5) / 3, "p2": (0.5 + 0.5 + 0.5) / 3, "p3": (0 + 0 + 0) / 3,
                # neg pool rows: ta_teacher n2 0.2 < n1 0.8, ta_student n1 0.3 < n2 0.6
                "n1": (1 + 1 + 0.75) / 3, "n2": (0 + 0 + 0.25) / 3}
    for i, u in expected.items():
        assert weight[i] == pytest.approx(0.2 + 0.8 * u, abs=1e-6), i
    assert weight["s1"] == 1.0


def test_missing_ta_signals_count_as_neutral():
    table = staged([("x", "corpus", "pos", 0.9, 0.9, 0.5, None, None, 1),
                    ("y", "corpus", "pos", 0.9, 0.9, 0.5, None, None, 1)])
    weights = select(table, llkd=False, weight_floor=0.0).published["weight"].to_pylist()
    assert weights == pytest.approx([(0.5 + 0.5 + 0.5) / 3] * 2)


def test_class_averages_move_over_rounds():
    # class pos: round 1 mean confidence 0.9, round 2 mean 0.6; momentum 0.5 -> round 2 bar 0.75
    table = staged([
        ("a", "corpus", "pos", 0.95, 0.9, 1.0, None, None, 1),
        ("b", "corpus", "pos", 0.85, 0.9, 1.0, None, None, 1),   # < 0.9: unsure in round 1
        ("c", "corpus", "pos", 0.76, 0.9, 1.0, None, None, 2),   # >= 0.75: kept (round 2 mean 0.6)
        ("d", "corpus", "pos", 0.44, 0.9, 1.0, None, None, 2),   # unsure
    ])
    assert reasons(select(table, ta_weighting=False, momentum=0.5)) == {
        "b": "llkd_teacher_unsure", "d": "llkd_teacher_unsure"}
    # without memory the round 2 bar is its own mean, 0.6: c still kept; with momentum 0.9 the
    # bar is 0.87 and c is dropped
    assert "c" not in reasons(select(table, ta_weighting=False, momentum=0.0))
    assert reasons(select(table, ta_weighting=False, momentum=0.9))["c"] == "llkd_teacher_unsure"


def test_select_sql_without_signals_names_the_problem():
    plain = staged([("x", "corpus", "pos", 0.9, 0.9, 0.5, None, None, 1)]).drop_columns(
        list(contract.SIGNAL_COLUMNS))
    with pytest.raises(ValueError, match="needs signals.enabled"):
        select(plain)
