import math

import numpy as np
import pytest
import torch

from models.teacher import HFTeacher, label_stats

LABELS = ["negative", "positive", "sci.space", "very positive"]  # mixes 1- and multi-token labels
TEXTS = ["the movie was good", "a bad film with terrible pacing and awful dialogue",
         "good", "the acting was great but the pacing was bad and the dialogue awful"]


def naive_scores(teacher: HFTeacher, text: str) -> list[float]:
    """Reference: full prompt + label tokens in one uncached sequence, chain rule by hand."""
    prompt = teacher.tokenizer(teacher.prompt.render(text), add_special_tokens=False)["input_ids"]
    out = []
    for ids in teacher.label_ids:
        seq = torch.tensor([prompt + ids])
        with torch.no_grad():
            logp = torch.log_softmax(teacher.model(seq).logits[0].float(), dim=-1)
        out.append(sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(ids)))
    return out


@pytest.fixture(scope="module")
def teacher(tiny_lm):
    return HFTeacher(tiny_lm, LABELS, batch_size=3)


def test_labels_include_multi_token_ones(teacher):
    assert max(len(ids) for ids in teacher.label_ids) > 1
    assert min(len(ids) for ids in teacher.label_ids) >= 1


def test_cached_batched_scores_match_uncached_reference(teacher):
    got = teacher.score_labels(TEXTS)
    want = np.array([naive_scores(teacher, t) for t in TEXTS])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_scores_do_not_depend_on_batch_composition(teacher):
    together = teacher.score_labels(TEXTS)
    alone = np.vstack([teacher.score_labels([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_long_text_is_truncated_to_max_input_tokens(tiny_lm):
    t = HFTeacher(tiny_lm, LABELS, max_input_tokens=5)
    long = " ".join(["the movie was good"] * 50)
    assert len(t._ids(t.truncate(long))) <= 6  # decode/re-encode may split one token


def test_label_stats():
    stats = label_stats(np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])), ["a", "b", "c"])
    assert [s["teacher_label"] for s in stats] == ["a", "c"]
    assert stats[0]["teacher_confidence"] == pytest.approx(0.7)
    assert stats[0]["teacher_margin"] == pytest.approx(0.5)
    assert stats[1]["teacher_entropy"] == pytest.approx(-(2 * 0.1 * math.log(0.1) + 0.8 * math.log(0.8)))
    assert sum(stats[0]["label_probs"]) == pytest.approx(1.0, abs=1e-6)


def test_rows_reuse_the_shared_prefix_cache(teacher):
    assert all(teacher.encode(t).shared for t in TEXTS)
    assert len(teacher.prefix_ids) > 10
