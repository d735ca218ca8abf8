"""Prompt formatting, output parsing (hand-written outputs) and the HF generation backend."""
import pytest

from potstill.models.generation.generate import (DEFAULT_REQUEST, HFGenerator, PromptSpec, Sampling, build_prompts,
                             format_messages, parse_output, render_prompt)

LABELS = ["negative", "positive"]
SEED = {"negative": ["bad one", "awful two", "dull three"], "positive": ["good one", "great two"]}
UNLABELED = [f"corpus text {i}" for i in range(20)]


# --- prompts ----------------------------------------------------------------------------------

def test_prompts_per_label_with_seed_examples_of_that_label_only():
    specs = build_prompts(LABELS, 3, 2, "seed", SEED, UNLABELED, seed=0)
    assert [(s.label, s.index) for s in specs] == [(l, i) for l in LABELS for i in range(3)]
    for s in specs:
        assert len(s.labelled) == 2 and set(s.labelled) <= set(SEED[s.label]) and not s.unlabeled


def test_both_takes_half_from_seed_and_the_rest_from_the_corpus():
    (spec,) = build_prompts(["negative"], 1, 5, "both", SEED, UNLABELED, seed=0)
    assert len(spec.labelled) == 3 and len(spec.unlabeled) == 2
    assert set(spec.unlabeled) <= set(UNLABELED)
    (spec,) = build_prompts(["negative"], 1, 3, "unlabeled", SEED, UNLABELED, seed=0)
    assert not spec.labelled and len(spec.unlabeled) == 3


def test_draws_are_seeded_and_do_not_depend_on_the_number_of_prompts():
    a = build_prompts(LABELS, 4, 2, "both", SEED, UNLABELED, seed=7)
    assert a == build_prompts(LABELS, 4, 2, "both", SEED, UNLABELED, seed=7)
    more = build_prompts(LABELS, 9, 2, "both", SEED, UNLABELED, seed=7)
    assert [s for s in more if s.index < 4] == a
    assert a != build_prompts(LABELS, 4, 2, "both", SEED, UNLABELED, seed=8)


def test_small_or_empty_pools_give_fewer_examples_not_errors():
    (spec,) = build_prompts(["positive"], 1, 4, "seed", SEED, [], seed=0)
    assert len(spec.labelled) == 2  # only two positive seed rows
    (spec,) = build_prompts(["neutral"], 1, 4, "both", SEED, [], seed=0)
    assert spec.labelled == () and spec.unlabeled == ()
    with pytest.raises(ValueError, match="example_source"):
        build_prompts(LABELS, 1, 1, "gold", SEED, UNLABELED)


def test_messages_name_the_label_show_the_examples_and_take_a_custom_request():
    spec = PromptSpec("positive", 0, ("good one",), ("corpus text 1",))
    (msg,) = format_messages(spec, LABELS, "Is this review negative or positive?")
    text = msg["content"]
    assert msg["role"] == "user" and "Is this review negative or positive?" in text
    assert '"positive"' in text and "- good one" in text and "- corpus text 1" in text
    assert DEFAULT_REQUEST.replace("{label}", "positive") in text
    (msg,) = format_messages(spec, LABELS, None, "Write a {label} movie review.")
    assert msg["content"].endswith("Write a positive movie review.")
    long = PromptSpec("positive", 0, ("x" * 5000,))
    assert len(format_messages(long, LABELS, None)[0]["content"]) < 1500


def test_render_prompt_uses_the_chat_template(tiny_lm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    rendered = render_prompt(tok, [{"role": "user", "content": "hi"}])
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    tok.chat_template = None
    assert render_prompt(tok, [{"role": "user", "content": "hi"}]).endswith("hi\n\nNew text:")


# --- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, want", [
    ("A warm, funny film.", "A warm, funny film."),
    ('"A warm, funny film."', "A warm, funny film."),
    ("\u201cA warm film.\u201d", "A warm film."),
    ("\u00abUn film chaleureux.\u00bb", "Un film chaleureux."),
    ("Review: A warm film.", "A warm film."),
    ("**New review:** A warm film.", "A warm film."),
    ("Text 3: A warm film.", "A warm film."),
    ("positive: A warm film.", "A warm film."),
    ("[positive] A warm film.", "A warm film."),
    ("A warm film. (positive)", "A warm film."),
    ('Review: "positive: A warm film."', "A warm film."),
    ("Here is a new positive review:\nA warm film.", "A warm film."),
    ("Here is a new positive review:\n\n\"A warm film.\n\nI hope this helps!", "A warm film."),
    ("Sure! Here is one.\nA warm film.", "A warm film."),
    ("1. A warm film.\n2. A cold film.", "A warm film."),
    ("- A warm film.\n- A cold film.", "A warm film."),
    ("A warm film.\nLabel: positive", "A warm film."),
    ("A warm\n  film.", "A warm film."),
    ('He said "wow" and "yes".', 'He said "wow" and "yes".'),
    ("\u300c\u3068\u3066\u3082\u826f\u3044\u6620\u753b\u3002\u300d", "\u3068\u3066\u3082\u826f\u3044\u6620\u753b\u3002"),
])
def test_parse_keeps_one_clean_example(raw, want):
    parsed = parse_output(raw, LABELS)
    assert parsed.ok and parsed.text == want and parsed.reason is None and parsed.raw == raw


@pytest.mark.parametrize("raw, reason", [
    ("", "empty_output"),
    ("   \n ", "empty_output"),
    ('""', "no_text"),
    ("Review:", "preamble_only"),
    ("Here is a new positive review:", "preamble_only"),
    ("positive", "label_only"),
    ("Positive.", "label_only"),
    ("[negative]", "no_text"),
])
def test_parse_failures_keep_the_raw_output_and_a_reason(raw, reason):
    parsed = parse_output(raw, LABELS)
    assert not parsed.ok and parsed.text is None and parsed.reason == reason and parsed.raw == raw


def test_truncated_only_when_the_kept_text_was_cut():
    assert parse_output("A warm film that", LABELS, truncated=True).reason == "truncated"
    # the example ended; the model ran out of tokens later, in a second paragraph or item
    assert parse_output("A warm film.\n\nIt was", LABELS, truncated=True).text == "A warm film."
    assert parse_output("1. A warm film.\n2. A cold", LABELS, truncated=True).text == "A warm film."
    assert parse_output("A warm film that", LABELS, truncated=False).ok


# --- HF backend (tiny random model) -----------------------------------------------------------

@pytest.fixture(scope="module")
def generator(tiny_lm):
    return HFGenerator(tiny_lm, threads=1)


CONVS = [[{"role": "user", "content": "the movie was good"}],
         [{"role": "user", "content": "a bad film with terrible pacing and awful dialogue"}],
         [{"role": "user", "content": "good"}]]


def test_generate_returns_n_outputs_per_prompt_and_is_seeded(generator):
    sampling = Sampling(n=2, max_new_tokens=6, seed=3)
    out = generator.generate(CONVS, sampling)
    assert [len(o) for o in out] == [2, 2, 2]
    assert all(isinstance(g.text, str) and "<|im_end|>" not in g.text for o in out for g in o)
    assert out == generator.generate(CONVS, sampling)
    assert out != generator.generate(CONVS, Sampling(n=2, max_new_tokens=6, seed=4))


def test_left_padding_gives_each_prompt_the_output_it_gets_alone(generator):
    # near-greedy sampling: the batch (prompts of different lengths) must not change a prompt's tokens
    cold = Sampling(n=1, temperature=1e-4, max_new_tokens=5, seed=0)
    together = generator.generate(CONVS, cold)
    alone = [generator.generate([c], cold)[0] for c in CONVS]
    assert together == alone


def test_truncated_flag_marks_outputs_that_hit_max_new_tokens(generator):
    out = generator.generate(CONVS, Sampling(n=4, max_new_tokens=2, seed=0))
    flags = [g.truncated for o in out for g in o]
    assert any(flags)  # a random model rarely says end-of-turn within 2 tokens
    stopped = [g for o in out for g in o if not g.truncated]
    assert all(len(generator.tokenizer(g.text, add_special_tokens=False)["input_ids"]) <= 2 for g in stopped)
