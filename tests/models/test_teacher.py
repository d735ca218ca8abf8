import math

import numpy as np
import pytest
import torch

from potstill.models.teacher.hf import HFTeacher, label_stats

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


def naive_answer_logprob(teacher: HFTeacher, prompt_text: str, answer: str) -> float:
    prompt = teacher.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = teacher._ids(teacher.prompt.answer_prefix + answer)
    with torch.no_grad():
        logp = torch.log_softmax(teacher.model(torch.tensor([prompt + ids])).logits[0].float(), -1)
    return sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(ids))


def test_verbalizer_forms_are_summed(tiny_lm):
    forms = {"positive": ["positive", "good"], "negative": ["negative", "bad", "awful"]}
    t = HFTeacher(tiny_lm, ["negative", "positive"], verbalizers=forms, batch_size=2)
    got = t.score_labels(TEXTS[:3])
    for row, text in enumerate(TEXTS[:3]):
        prompt = t.prompt.render(text)
        for col, label in enumerate(["negative", "positive"]):
            want = math.log(sum(math.exp(naive_answer_logprob(t, prompt, f)) for f in forms[label]))
            assert got[row, col] == pytest.approx(want, abs=1e-4)


def test_letters_style_scores_letters(tiny_lm):
    t = HFTeacher(tiny_lm, LABELS, style="letters")
    assert "A) negative" in t.prompt.head and "D) very positive" in t.prompt.head
    got = t.score_labels(TEXTS[:1])
    want = [naive_answer_logprob(t, t.prompt.render(TEXTS[0]), c) for c in "ABCD"]
    np.testing.assert_allclose(got[0], want, atol=1e-4)


def test_demonstrations_are_scored_in_the_prompt(tiny_lm):
    from potstill.models.teacher.prompts import Demo

    t = HFTeacher(tiny_lm, ["negative", "positive"], batch_size=2)
    demos = [[Demo("a bad film", "negative"), Demo("good", "positive")], [], [Demo("great", "positive")]]
    got = t.score_labels(TEXTS[:3], demos)
    assert [t.encode(x, d).shared for x, d in zip(TEXTS[:3], demos)] == ["head", "prefix", "head"]
    for row in range(3):
        prompt = t.prompt.render(TEXTS[row], demos[row])
        assert "Answer: " in prompt or not demos[row]
        want = [naive_answer_logprob(t, prompt, l) for l in ["negative", "positive"]]
        np.testing.assert_allclose(got[row], want, atol=1e-4)
