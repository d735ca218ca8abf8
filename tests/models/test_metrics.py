import numpy as np
import pytest

from potstill.models.metrics import classification_metrics, expected_calibration_error

ABC = ["a", "b", "c"]


def test_perfect_predictions():
    m = classification_metrics([0, 1, 2, 0], [0, 1, 2, 0], ABC)
    assert m == {"accuracy": 1.0, "macro_f1": 1.0, "per_class_recall": {"a": 1.0, "b": 1.0, "c": 1.0},
                 "ece": None, "n": 4}


def test_all_wrong():
    m = classification_metrics([0, 0, 1, 1], [1, 1, 0, 0], ["neg", "pos"])
    assert m["accuracy"] == 0.0
    assert m["macro_f1"] == 0.0
    assert m["per_class_recall"] == {"neg": 0.0, "pos": 0.0}


def test_three_classes_by_hand():
    # a: tp 2 fp 0 fn 1 -> F1 4/5; b: tp 1 fp 1 fn 1 -> 2/4; c: tp 1 fp 1 fn 0 -> 2/3
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ABC)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["per_class_recall"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})
    assert m["n"] == 6


def test_label_absent_and_never_predicted_counts_as_zero_f1():
    m = classification_metrics([0, 1], [0, 1], ABC)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["per_class_recall"]["c"] is None


def test_ece_perfectly_calibrated():
    # 5 rows at confidence 0.8 with 4 right, 5 rows at 0.6 with 3 right: every bin's gap is 0
    probs = np.array([[0.8, 0.2]] * 5 + [[0.4, 0.6]] * 5)
    y_true = [0, 0, 0, 0, 1] + [1, 1, 1, 0, 0]
    m = classification_metrics(y_true, probs.argmax(1), ["x", "y"], probs=probs)
    assert m["ece"] == pytest.approx(0.0, abs=1e-12)


def test_ece_badly_calibrated():
    # half the rows at 0.9 all right (gap 0.1), half at 0.6 all wrong (gap 0.6) -> 0.5*0.1 + 0.5*0.6
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    y_true = np.array([0, 1, 1, 0])
    assert expected_calibration_error(probs, y_true) == pytest.approx(0.35)
    # confidently wrong everywhere: ECE is the confidence itself
    assert expected_calibration_error(np.array([[0.9, 0.1]] * 3), np.array([1, 1, 1])) == pytest.approx(0.9)


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 3], [0, 1], ABC)
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics([], [], ABC)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], [0, 1], ABC, probs=np.ones((2, 2)) / 2)
