"""The teacher setup search on crafted teachers: it scores once per prompt setup and picks the
verbalizer that fixes an always-one-class teacher."""
import json

import numpy as np
import pytest

from potstill.models.teacher.hf import TeacherBase
from potstill.config.core import parse_config

LABELS = ["business", "sports"]
TOPICS = {"business": ["shares fell", "the bank merged", "profits rose", "a new ceo", "the market",
                       "quarterly sales"],
          "sports": ["the match ended", "a late goal", "the coach resigned", "the final lap",
                     "a new record", "the team won"]}


class CraftedTeacher(TeacherBase):
    """Says lowercase "business" a little for every text (so the exact labels always give
    business), but its Capitalised answer follows the text's topic: what instruct models do."""
    calls = 0

    def score_candidates(self, texts, demos=None):
        type(self).calls += 1
        out = np.full((len(texts), len(self.cand_ids)), np.log(1e-6))
        for r, text in enumerate(texts):
            topic = "sports" if any(text.startswith(t) for t in TOPICS["sports"]) else "business"
            for c, (_, surface) in enumerate(self.prompt.verbalizer.candidates):
                if surface == "business":
                    out[r, c] = np.log(0.2)
                elif surface == topic.capitalize():
                    out[r, c] = np.log(0.5)
        return out


def seed_rows(tmp_path):
    path = tmp_path / "seed.jsonl"
    path.write_text("".join(json.dumps({"text": f"{t} today", "label": l}) + "\n"
                            for l, ts in TOPICS.items() for t in ts))
    return path


def config(tmp_path, **overrides):
    seed = seed_rows(tmp_path)
    raw = {"dataset": "d", "task": {"labels": LABELS},
           "corpus": {"unlabeled": {"path": str(seed)}, "seed": {"path": str(seed)}},
           "audit": {"compare_gold": False,
                     "search": {"few_shot_k": [0], "calibration": ["none", "contextual"]}}}
    for key, value in overrides.items():
        raw.setdefault(key, {}).update(value)
    return parse_config(raw)


def test_search_picks_the_case_variants_that_fix_an_always_one_class_teacher(tiny_lm, tmp_path):
    from potstill.models.quality.audit import read_seed
    from potstill.models.quality.tuning import search

    cfg = config(tmp_path)
    seeds = read_seed(cfg)
    teacher = CraftedTeacher(tiny_lm, LABELS)
    CraftedTeacher.calls = 0
    result = search(cfg.teacher, cfg.audit, cfg.task, teacher, seeds)
    scores = {c.name: c.macro_f1 for c in result.candidates}
    assert scores["labels/k=0/exact/none"] == pytest.approx(1 / 3)   # always "business"
    assert result.chosen.name == "labels/k=0/cased/none" and result.chosen.macro_f1 == 1.0
    assert result.chosen.forms["sports"][:2] == ["sports", "Sports"]
    assert CraftedTeacher.calls == 2          # seed rows + content-free inputs, once for all variants
    assert (result.cv_pred == [LABELS.index(r.gold_label) for r in seeds]).all()
    update = result.teacher_update(cfg.teacher)
    assert update["verbalizers"] == result.chosen.forms and update["calibration"] == "none"


def test_explicit_teacher_settings_are_not_searched(tiny_lm, tmp_path):
    from potstill.models.quality.audit import read_seed
    from potstill.models.quality.tuning import grid, search

    cfg = config(tmp_path, teacher={"calibration": "none", "verbalizers": {"sports": ["sports"]}})
    styles, ks, verbs, cals = grid(cfg.teacher, cfg.audit.search, cfg.task)
    assert verbs == [("configured", {"sports": ["sports"]})] and cals == ["none"] and ks == [0]
    result = search(cfg.teacher, cfg.audit, cfg.task, CraftedTeacher(tiny_lm, LABELS), read_seed(cfg))
    assert [c.name for c in result.candidates] == ["labels/k=0/configured/none"]


def test_alternatives_add_plain_words(tmp_path):
    from potstill.models.quality.tuning import verbalizer_forms

    forms = verbalizer_forms(["ham", "spam"], "alternatives", {"ham": ["normal email"]})
    assert forms["ham"][0] == "ham" and "Normal email" in forms["ham"] and "Normal Email" in forms["ham"]
    assert forms["spam"] == ["spam", "Spam", "SPAM"]
    assert verbalizer_forms(["ham", "spam"], "exact", {}) is None


def test_tune_and_gate_returns_the_tuned_teacher(tiny_lm, tmp_path, monkeypatch):
    from potstill.models.quality import audit
    from potstill.models.teacher.calibration import Calibration
    from potstill.models.teacher.teacher_setup import TeacherSetup

    cfg = config(tmp_path)
    monkeypatch.setattr(TeacherSetup, "load", lambda self, backend=None: audit.LabelledTeacher(
        CraftedTeacher(tiny_lm, LABELS), None, Calibration()))
    seeds = audit.read_seed(cfg)
    tuned, report = audit.tune_and_gate(cfg, TeacherSetup.from_config(cfg, tiny_lm, seeds), seeds)
    assert tuned.verbalizers["business"][:2] == ["business", "Business"]
    assert report["search"]["chosen"] == "labels/k=0/cased/none" and report["accuracy"] == 1.0
    assert len(report["search"]["candidates"]) == 4 and report["gate"]["weak"] is False
    assert tuned.calibration.log_prior is None and tuned.prompt_style == "labels"


def test_the_tuned_setup_keeps_the_model_its_store_and_the_drivers_thread_share(tiny_lm, tmp_path,
                                                                               monkeypatch):
    """The audit returns the driver's setup with the search's choices, never one rebuilt from a
    copy of the config (which lost the driver's thread share)."""
    from potstill.models.quality import audit
    from potstill.models.teacher.calibration import Calibration
    from potstill.models.teacher.teacher_setup import TeacherSetup
    from potstill.store import TeacherStore

    cfg = config(tmp_path)
    monkeypatch.setattr(TeacherSetup, "load", lambda self, backend=None: audit.LabelledTeacher(
        CraftedTeacher(tiny_lm, LABELS), None, Calibration()))
    seeds = audit.read_seed(cfg)
    store = TeacherStore("ab" * 32, str(tmp_path / "store"))
    setup = TeacherSetup.from_config(cfg, tiny_lm, seeds, store=store, threads=1)
    tuned, _ = audit.tune_and_gate(cfg, setup, seeds)
    assert tuned.verbalizers != setup.verbalizers  # the search chose the case variants
    assert (tuned.threads, tuned.store) == (1, store)
    assert (tuned.model_path, tuned.demo_pool, tuned.engine) == (setup.model_path, setup.demo_pool, setup.engine)


def test_more_demonstrations_must_win_by_a_margin_the_gold_rows_resolve():
    """k=4 puts four gold rows in every pool row's prompt: it is chosen only when it beats the
    best k=0 setup by more than audit.search.cost_margin (and one row's worth)."""
    from potstill.models.quality.tuning import Candidate, _best

    gold = np.array([0] * 20 + [1] * 20)

    def candidate(k, wrong):
        pred = gold.copy()
        pred[:wrong] = 1 - pred[:wrong]
        raw = np.full((40, 2), -5.0)
        raw[np.arange(40), pred] = 0.0
        return Candidate("labels", k, "exact", None, "none", raw)
    cheap, slightly, much = candidate(0, 4), candidate(4, 3), candidate(4, 0)
    rows = np.arange(40)
    assert _best([cheap, slightly], rows, gold, LABELS, cost_margin=0.05) is cheap
    assert _best([cheap, much], rows, gold, LABELS, cost_margin=0.05) is much
    assert _best([cheap, slightly], rows, gold, LABELS, cost_margin=0.0) is slightly  # plain best
    assert _best([slightly, cheap], rows, gold, LABELS, cost_margin=0.05) is cheap  # order does not matter


def test_more_demonstrations_past_the_margin_but_not_resolved_stay_unchosen():
    """16 gold rows: k=4 right on seven rows k=0 gets wrong and wrong on five it gets right: two
    rows net, past every margin, but the rows cannot tell them apart (wins ~72% of resamples,
    under audit.search.cost_confidence), so the cheaper setup labels the pool. Right on six rows
    more and on none fewer, they can."""
    from potstill.models.quality.tuning import Candidate, _best

    gold = np.array([0] * 8 + [1] * 8)

    def candidate(k, wrong):
        pred = gold.copy()
        pred[wrong] = 1 - pred[wrong]
        raw = np.full((16, 2), -5.0)
        raw[np.arange(16), pred] = 0.0
        return Candidate("labels", k, "exact", None, "none", raw)
    cheap = candidate(0, [1, 2, 8, 9, 10, 11, 12])
    close, clear = candidate(4, [3, 4, 5, 6, 13]), candidate(4, [2])
    rows = np.arange(16)
    assert _best([cheap, close], rows, gold, LABELS, cost_margin=0.02) is close      # margin alone
    assert _best([cheap, close], rows, gold, LABELS, 0.02, confidence=0.8) is cheap
    assert _best([cheap, clear], rows, gold, LABELS, 0.02, confidence=0.8) is clear


class DemoSensitiveTeacher(TeacherBase):
    """Right on every row without demonstrations and wrong with them (`demos_help=False`), or
    the other way round: what a dearer setup can buy, or not. Counts rows per k."""
    rows: dict = {}
    demos_help = False

    def score_candidates(self, texts, demos=None):
        k = len(demos[0]) if demos and demos[0] else 0
        type(self).rows[k] = type(self).rows.get(k, 0) + len(texts)
        right = (k > 0) == self.demos_help
        out = np.full((len(texts), len(self.cand_ids)), np.log(1e-6))
        for r, text in enumerate(texts):
            topic = "sports" if any(text.startswith(t) for t in TOPICS["sports"]) else "business"
            if not right:
                topic = "business" if topic == "sports" else "sports"
            for c, (_, surface) in enumerate(self.prompt.verbalizer.candidates):
                if surface == topic:
                    out[r, c] = np.log(0.6)
        return out


@pytest.mark.parametrize("demos_help", [False, True])
def test_a_dearer_pass_stops_once_it_cannot_win_and_the_choice_is_the_full_search_s(
        tiny_lm, tmp_path, monkeypatch, demos_help):
    """A pass with more demonstrations is scored in chunks, classes interleaved; once even every
    row left right could not lift it past the cheaper best by the margin, it stops: fewer prompts,
    the same choice as scoring every row (checked with the bound switched off)."""
    from potstill.models.quality import tuning
    from potstill.models.quality.audit import read_seed

    cfg = config(tmp_path, teacher={"few_shot": {"selection": "fixed"}},
                 audit={"search": {"few_shot_k": [0, 2], "calibration": ["none"],
                                   "verbalizers": ["exact"]}})
    seeds = read_seed(cfg)
    DemoSensitiveTeacher.demos_help = demos_help

    def run():
        DemoSensitiveTeacher.rows = {}
        return tuning.search(cfg.teacher, cfg.audit, cfg.task, DemoSensitiveTeacher(tiny_lm, LABELS),
                             seeds), dict(DemoSensitiveTeacher.rows)

    result, rows = run()
    with monkeypatch.context() as m:  # the bound off: every pass scores every row
        m.setattr(tuning, "_macro_f1_bound", lambda *a: float("inf"))
        full, full_rows = run()
    assert result.chosen.name == full.chosen.name
    assert result.chosen.k == (2 if demos_help else 0)
    assert full_rows == {0: 12, 2: 12} and rows[0] == 12
    if demos_help:  # the dearer pass wins: never stopped, the same candidates and CV figures
        assert rows[2] == 12 and not result.pruned
        assert (result.cv_pred == full.cv_pred).all()
    else:
        assert rows[2] == tuning.PRUNE_CHUNK < 12
        assert result.pruned == [{"pass": "labels/k=2", "after_rows": tuning.PRUNE_CHUNK, "rows": 12,
                                  "bound": pytest.approx(result.pruned[0]["bound"]),
                                  "to_beat": pytest.approx(1.0 + 1 / 12, abs=1e-4)}]
        assert result.pruned[0]["bound"] < 1.0
        assert tuning.report(result, np.array([LABELS.index(r.gold_label) for r in seeds]),
                             LABELS)["pruned"] == result.pruned


def test_the_interleaved_order_takes_classes_in_turn_and_keeps_every_row():
    from potstill.models.quality.tuning import _interleaved

    gold = np.array([0] * 5 + [1] * 3 + [2] * 2)
    order = _interleaved(gold, 0)
    assert sorted(order) == list(range(10))
    assert list(gold[order][:6]) == [0, 1, 2, 0, 1, 2] and list(gold[order][6:]) == [0, 1, 0, 0]
    assert (order == _interleaved(gold, 0)).all() and not (order == _interleaved(gold, 1)).all()
