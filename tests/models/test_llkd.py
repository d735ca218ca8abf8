"""student.selection: llkd keeps and drops the rows a hand-worked batch says."""
import numpy as np

from potstill.models.student.llkd import LLKDSelector


def test_hand_worked_batches():
    sel = LLKDSelector(2, momentum=0.5, confidence_scale=1.0, need_scale=1.0)
    no_seed = np.zeros(4, dtype=bool)
    # batch 1, class 0: conf 0.9, 0.6 -> mean 0.75; need 0.9, 0.8 -> mean 0.85
    #          class 1: conf 0.8, 0.7 -> mean 0.75; need 0.6, 0.2 -> mean 0.4
    keep = sel.select(np.array([0.9, 0.6, 0.8, 0.7]), np.array([0, 0, 1, 1]),
                      np.array([0.9, 0.8, 0.6, 0.2]), no_seed)
    assert keep.tolist() == [True, False, True, False]
    assert sel.mu_conf.tolist() == [0.75, 0.75] and np.allclose(sel.mu_need, [0.85, 0.4])
    # batch 2: class 0 averages move to 0.5*0.75 + 0.5*0.7 = 0.725 and 0.5*0.85 + 0.5*0.9 = 0.875:
    # row 0 (conf 0.7) is dropped. Row 1 is a gold seed row: kept, and left out of the averages.
    keep = sel.select(np.array([0.7, 0.95]), np.array([0, 1]), np.array([0.9, 0.1]),
                      np.array([False, True]))
    assert keep.tolist() == [False, True]
    assert np.allclose(sel.mu_conf, [0.725, 0.75]) and np.allclose(sel.mu_need, [0.875, 0.4])
    # need_scale 0 switches the need test off; the scale multiplies the class average
    lenient = LLKDSelector(1, momentum=0.0, confidence_scale=0.5, need_scale=0.0)
    assert lenient.select(np.array([0.9, 0.5, 0.4]), np.zeros(3, int), np.array([0.0, 0.0, 1.0]),
                          np.zeros(3, bool)).tolist() == [True, True, True]   # 0.5 * 0.6 = 0.3
    summary = sel.summary(["a", "b"])
    assert summary["pool_rows_seen"] == 5 and summary["pool_rows_kept"] == 2


def test_warm_up_only_updates():
    sel = LLKDSelector(2, momentum=0.5)
    keep = sel.select(np.array([0.9, 0.1]), np.array([0, 0]), np.array([0.1, 0.1]),
                      np.zeros(2, bool), apply=False)
    assert keep.all() and sel.mu_conf[0] == 0.5 and sel.seen.sum() == 0


def test_trainer_selects_per_batch(tmp_path, tiny_bert, monkeypatch):
    from potstill.models.student.trainer import train
    from potstill.config.core import parse_config
    from test_trainer import raw_config, write_version

    monkeypatch.setenv("POTSTILL_CACHE", str(tmp_path / "cache"))
    cfg = parse_config(raw_config(tmp_path, tiny_bert, epochs=2, selection="llkd",
                                  llkd_warmup_share=0.0))
    metrics = train(write_version(tmp_path / "v1"), cfg, tmp_path / "out")
    sel = metrics["selection"]
    assert sel["method"] == "llkd" and sel["pool_rows_seen"] == 32    # 16 pool rows x 2 epochs
    assert 0 < sel["pool_rows_kept"] < sel["pool_rows_seen"]
