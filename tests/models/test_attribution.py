"""Attribution: word merging and prompt masking on crafted inputs, exactness and completeness on a
tiny random Llama, the deletion metric on a crafted case, and SmolLM2 on a few real rows."""
import numpy as np
import pytest
import torch

from potstill.models.saliency.attribution import (Explainer, explained_labels, merge_to_words, tokens_in_span, top_k,
                                word_spans)
from potstill.models.quality.audit import LabelledTeacher
from potstill.models.teacher.calibration import Calibration
from potstill.models.teacher.demos import DemoSelector
from potstill.models.saliency.faithfulness import deletion_cases, deletion_test, locate, sample_rows, without
from potstill.models.teacher.prompts import Demo
from potstill.models.teacher.hf import HFTeacher

LABELS = ["negative", "positive", "sci.space", "very positive"]  # 1- and multi-token answers
TEXTS = ["the movie was good", "a bad film with terrible pacing and awful dialogue", "good"]
EXPLAIN = ["positive", "very positive", "sci.space"]


# --- crafted inputs ---------------------------------------------------------------------------

def test_word_spans_are_whitespace_separated():
    assert word_spans("a  film, truly\ngood") == [(0, 1), (3, 8), (9, 14), (15, 19)]


def test_subword_scores_are_summed_per_word():
    text = "unbelievably good film"          # words: [0,12) [13,17) [18,22)
    offsets = [(0, 2), (2, 9), (9, 12), (12, 17), (17, 18), (18, 22)]  # " good" carries its space
    scores = [1.0, 2.0, 3.0, 0.5, 7.0, -1.0]  # (17, 18) is the space alone: no word, dropped
    np.testing.assert_allclose(merge_to_words(scores, offsets, word_spans(text)), [6.0, 0.5, -1.0])


def test_a_token_straddling_two_words_goes_to_the_larger_overlap():
    spans = word_spans("ab cdef")
    np.testing.assert_allclose(merge_to_words([1.0], [(1, 5)], spans), [0.0, 1.0])


def test_tokens_in_span_masks_everything_outside_the_text():
    offsets = [(0, 5), (5, 6), (6, 10), (10, 12), (12, 20)]
    assert tokens_in_span(offsets, 6, 12) == [False, False, True, True, False]
    assert tokens_in_span([(7, 7)], 6, 12) == [False]  # empty spans (special tokens) never count


def test_top_k_in_text_order_with_ties_to_the_earlier_word():
    assert top_k(np.array([0.1, 0.9, 0.5, 0.9, 0.2]), 3) == [1, 2, 3]
    assert top_k(np.array([1.0, 1.0, 1.0]), 2) == [0, 1]
    assert top_k(np.array([0.3]), 5) == [0]


def test_explained_label_is_gold_only_where_it_exists():
    rows = [{"teacher_label": "a", "gold_label": "b"}, {"teacher_label": "a", "gold_label": None}]
    assert explained_labels(rows, "teacher") == ["a", "a"]
    assert explained_labels(rows, "gold") == ["b", "a"]


# --- the tiny random model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def lt(tiny_lm):
    teacher = HFTeacher(tiny_lm, LABELS, verbalizers={"positive": ["positive", "good"]})
    return LabelledTeacher(teacher, None, Calibration((-1.0, -2.0, -0.5, -1.5), 1.7))


def test_only_the_texts_tokens_are_ranked(lt):
    ex = Explainer(lt)
    demo = [Demo("the movie was good", "positive")]        # same words as the text, in the prompt
    for demos in ((), demo):
        row = ex.encode("the movie was good", "positive", demos)
        text_tokens = [i for i, o in zip(row.ids, row.text_offsets) if o is not None]
        assert lt.teacher.tokenizer.decode(text_tokens).strip() == "the movie was good"
        assert row.shared == ("head" if demos else "prefix")
        spans = [o for o in row.text_offsets if o is not None]
        assert spans[0][0] == 0 and spans[-1][1] == len("the movie was good")


def test_forward_is_the_teachers_calibrated_log_probability(lt):
    ex = Explainer(lt)
    _, calibrated = lt.score(TEXTS)
    rows = [ex.encode(t, l) for t, l in zip(TEXTS, EXPLAIN)]
    embeds, args, _ = ex.batch_tensors(rows, "prefix")
    got = ex.forward_fn("prefix")(embeds, *args).detach().numpy()
    want = [calibrated[i, LABELS.index(l)] for i, l in enumerate(EXPLAIN)]
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients"])
def test_cached_batched_attributions_match_uncached_single_rows(lt, method):
    together = Explainer(lt, method, batch_size=3).explain(TEXTS, EXPLAIN)
    alone = Explainer(lt, method, batch_size=1, use_prefix_cache=False)
    for text, label, got in zip(TEXTS, EXPLAIN, together):
        (want,) = alone.explain([text], [label])
        np.testing.assert_allclose(got.word_scores, want.word_scores, rtol=1e-3, atol=1e-7)
        assert got.words == text.split() and got.rationale == want.rationale


def test_input_x_gradient_is_input_times_autograd_gradient(lt):
    ex = Explainer(lt, "input_x_gradient")
    rows = [ex.encode(t, l) for t, l in zip(TEXTS, EXPLAIN)]
    scores, is_text, _ = ex.attribute(rows, "prefix")
    embeds, args, _ = ex.batch_tensors(rows, "prefix")
    (grad,) = torch.autograd.grad(ex.forward_fn("prefix")(embeds, *args).sum(), embeds)
    np.testing.assert_allclose(scores, ((embeds * grad).sum(-1) * is_text).detach(), atol=1e-7)


def test_integrated_gradients_completeness(lt):
    ex = Explainer(lt, "integrated_gradients", ig_steps=64, batch_size=3, internal_batch_size=64)
    rows = [ex.encode(t, l) for t, l in zip(TEXTS, EXPLAIN)]
    scores, is_text, delta = ex.attribute(rows, "prefix")
    embeds, args, _ = ex.batch_tensors(rows, "prefix")
    f = ex.forward_fn("prefix")
    with torch.no_grad():
        diff = f(embeds, *args) - f(embeds * (~is_text).unsqueeze(-1), *args)
    assert diff.abs().min() > 1e-4  # the text matters, so the check below is not 0 == 0
    np.testing.assert_allclose(scores.sum(1), diff, rtol=1e-2, atol=1e-5)
    assert delta.abs().max() < 1e-2 * diff.abs().max()


def test_explanations_give_k_words_in_text_order_with_aligned_scores(lt):
    for e, text in zip(Explainer(lt, "input_x_gradient", top_k=3).explain(TEXTS, EXPLAIN), TEXTS):
        words = e.rationale.split()
        assert len(words) == min(3, len(text.split())) == len(e.rationale_scores)
        assert locate(text.split(), words) is not None  # a subsequence: text order
        assert e.rationale_scores == [float(np.float32(e.word_scores[i])) for i in e.top]


def test_rows_with_demonstrations_use_the_cached_head(lt):
    pool = DemoSelector(["great acting", "awful film"], ["positive", "negative"],
                        dict(zip(LABELS, lt.teacher.prompt.verbalizer.answers)), 2, "fixed")
    with_demos = LabelledTeacher(lt.teacher, pool, lt.calibration)
    ex = Explainer(with_demos, "input_x_gradient")
    _, calibrated = with_demos.score(TEXTS)
    rows = [ex.encode(t, l, d) for t, l, d in zip(TEXTS, EXPLAIN, pool.select(TEXTS))]
    assert {r.shared for r in rows} == {"head"}
    embeds, args, _ = ex.batch_tensors(rows, "head")
    got = ex.forward_fn("head")(embeds, *args).detach().numpy()
    np.testing.assert_allclose(got, [calibrated[i, LABELS.index(l)] for i, l in enumerate(EXPLAIN)],
                               atol=1e-4)


# --- the deletion metric ----------------------------------------------------------------------

def test_locate_and_without():
    words = "a good film , a good cast".split()
    assert locate(words, ["good", "good"]) == [1, 5]
    assert locate(words, ["cast", "film"]) is None  # not in text order
    assert without("a good film\na cast", [1, 3]) == "a film\ncast"


class _Keyword:
    """A crafted teacher: p(positive) is high exactly when the word "good" is in the text."""
    labels = ["negative", "positive"]

    def score_labels(self, texts, demos=None):
        return np.log([[0.1, 0.9] if "good" in t.split() else [0.6, 0.4] for t in texts])


def test_deletion_test_on_a_crafted_teacher():
    lt = LabelledTeacher(_Keyword(), None, Calibration())
    rows = [{"id": f"r{i}", "text": f"w1 w2 good w3 w4 w5 w6 w7 w8 w{i}", "rationale": "good",
             "label": "positive"} for i in range(20)]
    rows.append({"id": "short", "text": "good", "rationale": "good", "label": "positive"})
    report = deletion_test(lt, rows, seed=0)
    assert report["n"] == 20 and report["skipped"] == 1
    assert report["mean_p"] == pytest.approx(0.9)
    assert report["mean_drop_topk"] == pytest.approx(0.5)
    # a random word is "good" in 1 of 10 draws: random drop = 0.5 * that share
    assert 0 <= report["mean_drop_random"] < 0.25
    assert report["frac_topk_beats_random"] == pytest.approx(1 - report["mean_drop_random"] / 0.5)
    cases, _ = deletion_cases(rows, lt.teacher.labels, seed=0)
    assert cases == deletion_cases(rows, lt.teacher.labels, seed=0)[0]  # seeded
    assert sample_rows(rows, 5, 0) == sample_rows(list(reversed(rows)), 5, 0)


# --- the real model ---------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_rationales_on_real_rows():
    from potstill.models.registry import resolve_model

    teacher = HFTeacher(resolve_model("smollm2-135m-instruct").path, ["negative", "positive"],
                        "Is the sentiment of this movie review negative or positive?")
    lt = LabelledTeacher(teacher, None, Calibration())
    texts = ["A gorgeous, witty, seductive movie.",
             "The plot is nothing but boilerplate clichés from start to finish.",
             "An utterly charming and hilarious film that reminded me why I love going to the movies."]
    _, logp = lt.score(texts)
    labels = [lt.teacher.labels[i] for i in logp.argmax(1)]
    for method in ("saliency", "input_x_gradient", "integrated_gradients"):
        found = Explainer(lt, method, top_k=3, ig_steps=8, batch_size=3, internal_batch_size=24).explain(texts, labels)
        for e, text in zip(found, texts):
            assert len(e.rationale.split()) == 3 and locate(text.split(), e.rationale.split())
            assert np.all(np.isfinite(e.rationale_scores))
    rows = [{"id": str(i), "text": t, "rationale": e.rationale, "label": l}
            for i, (t, e, l) in enumerate(zip(texts, found, labels))]
    report = deletion_test(lt, rows)
    assert report["n"] == 3 and -1 <= report["mean_drop_topk"] <= 1
