"""Every quality filter and the duplicate / test-leak guard, on hand-written strings."""
import numpy as np
import pytest

from potstill.models.generation.text_filters import (DuplicateGuard, NearDupIndex, Reference, TextRules, check_text,
                                 corpus_scripts, example_overlap, minhash, repeated_ngram_ratio, tokens)

RULES = TextRules(min_chars=10, max_chars=200, min_letter_share=0.5, max_repeated_ngram_ratio=0.3,
                  scripts=frozenset({"LATIN"}))
NUM_PERM = 128


def reason(text, rules=RULES):
    verdict = check_text(text, rules)
    return verdict and verdict.reason


@pytest.mark.parametrize("text", [
    "A warm, funny film with a great cast.",
    "Un film chaleureux et drôle, porté par des acteurs formidables.",
    "Ein warmherziger, witziger Film mit großartiger Besetzung.",
    "Una película cálida y divertida, con un reparto excelente.",
    "A warm film \U0001F44D\u200d with a 10/10 cast.",   # emoji and ZWJ are fine
])
def test_clean_latin_texts_pass(text):
    assert check_text(text, RULES) is None


def test_length_bounds():
    assert reason("Too short") == "too_short"
    assert reason("word " * 50) == "too_long"
    assert check_text("exactly 10", RULES) is None


@pytest.mark.parametrize("bad", ["\x07", "\x00", "\ufffd", "\ue000", "\ud800"])
def test_control_private_unassigned_and_replacement_chars(bad):
    assert reason(f"A warm film{bad} with a cast.") == "bad_chars"


def test_letter_share():
    assert reason("12345 678 90 !!! ?? ### $$$ %%") == "low_letter_share"
    assert reason("=== *** --- ### 1. 2. 3. ok") == "low_letter_share"
    assert reason("A film: 9/10") is None  # 7 letters of 10 visible characters


def test_script_must_be_one_of_the_corpus_scripts():
    chinese = "\u8fd9\u90e8\u7535\u5f71\u975e\u5e38\u597d\u770b\uff0c\u6f14\u5458\u4e5f\u5f88\u51fa\u8272\u3002"
    assert reason(chinese) == "script_mismatch"
    assert reason("Очень тёплый и смешной фильм.") == "script_mismatch"
    # mostly Latin with a foreign name inside is fine
    assert reason("A warm film by \u9ed2\u6fa4 with a great cast.") is None
    cyrillic = TextRules(scripts=corpus_scripts(["Плохой фильм.", "Хороший фильм с актёрами."]))
    assert cyrillic.scripts == {"CYRILLIC"}
    assert reason("Очень тёплый и смешной фильм.", cyrillic) is None
    japanese = TextRules(scripts=corpus_scripts(["\u3068\u3066\u3082\u826f\u3044\u6620\u753b\u3067\u3057\u305f\u3002"]))
    assert {"HIRAGANA", "CJK"} <= japanese.scripts
    assert reason("\u7d20\u6674\u3089\u3057\u3044\u4f5c\u54c1\u3067\u3059\u306d\u3002", japanese) is None
    assert reason(chinese, TextRules(scripts=None)) is None  # no corpus profile: no check


def test_corpus_scripts_ignore_rare_scripts():
    texts = ["A long English review of a film. " * 5, "\u03b1"]  # one Greek letter
    assert corpus_scripts(texts) == {"LATIN"}
    assert corpus_scripts(["123 !!"]) == frozenset()


def test_repetition():
    assert repeated_ngram_ratio("a warm film with a great cast", 3) == 0.0
    assert repeated_ngram_ratio("great great great great great", 3) == pytest.approx(2 / 3)
    assert repeated_ngram_ratio("too short", 3) == 0.0
    loop = "The movie is great. The movie is great. The movie is great. The movie is great."
    assert reason(loop) == "repetitive"
    assert reason("great, " * 20) == "repetitive"


def test_tokens_split_unspaced_scripts_into_characters():
    assert tokens("A Warm film") == ["a", "warm", "film"]
    assert tokens("\u826f\u3044\u6620\u753b") == ["\u826f", "\u3044", "\u6620", "\u753b"]
    jp_loop = "\u826f\u3044\u6620\u753b\u3002" * 6
    assert reason(jp_loop, TextRules(scripts=None)) == "repetitive"


def test_label_mentions_only_when_asked_and_only_as_words():
    rules = TextRules(avoid_words=("negative", "positive"))
    assert reason("This movie review is Positive overall.", rules) == "label_mention"
    assert reason("A warm film, positively charming.", rules) is None  # not the word itself
    assert reason("This movie review is positive overall.") is None


def test_example_overlap_is_containment_in_one_example():
    example = "It's a fine, focused piece of work that reopens an interesting controversy."
    assert example_overlap("It's a fine, focused piece of work.", [example, "other"]) > 0.9
    assert example_overlap("A new film about a dog who paints portraits.", [example]) < 0.2
    assert example_overlap("anything", []) == 0.0


# --- near duplicates and the test-leak guard ----------------------------------------------------

BASE = "A warm, funny film about two brothers who run a bakery in Lisbon, with a great cast."
NEAR = "A warm and funny film about two brothers who run a bakery in Lisbon, with a great cast."
OTHER = "Terminally dull: the plot goes nowhere and the dialogue is painful to sit through."


def test_minhash_is_deterministic_and_estimates_similarity():
    assert np.array_equal(minhash(BASE, NUM_PERM), minhash(BASE, NUM_PERM))
    assert minhash(BASE, NUM_PERM).dtype == np.uint32 and minhash(BASE, NUM_PERM).shape == (NUM_PERM,)
    index = NearDupIndex(0.7, NUM_PERM)
    index.add(("corpus", "a"), minhash(BASE, NUM_PERM))
    key, sim = index.match(minhash(NEAR.upper(), NUM_PERM))  # case does not matter
    assert key == ("corpus", "a") and 0.7 <= sim < 1.0
    assert index.match(minhash(OTHER, NUM_PERM)) is None


def guard(*refs):
    return DuplicateGuard([Reference(src, i, minhash(t, NUM_PERM)) for src, i, t in refs], 0.7, NUM_PERM)


def test_exact_and_near_duplicates_of_corpus_and_seed_rows():
    g = guard(("corpus", "c1", BASE), ("seed", "s1", OTHER))
    assert g.check("c1", minhash(BASE, NUM_PERM)).reason == "exact_duplicate"
    assert g.check("s1", minhash(OTHER, NUM_PERM)).detail == "identical to seed row s1"
    near = g.check("g1", minhash(NEAR, NUM_PERM))
    assert near.reason == "near_duplicate" and "corpus row c1" in near.detail
    assert g.check("g2", minhash("Something else entirely, about a cat who sails.", NUM_PERM)) is None


def test_a_near_duplicate_of_a_test_row_is_a_leak_even_if_a_corpus_row_is_closer():
    g = guard(("corpus", "c1", NEAR), ("test", "t1", BASE))
    verdict = g.check("g1", minhash(NEAR, NUM_PERM))
    assert verdict.reason == "test_leak" and "test row t1" in verdict.detail
    assert g.check("t1", minhash(BASE, NUM_PERM)).reason == "test_leak"  # identical text (same id)


def test_an_id_in_test_and_corpus_counts_as_test():
    g = guard(("corpus", "x", BASE), ("test", "x", BASE))
    assert g.check("x", minhash(BASE, NUM_PERM)).reason == "test_leak"


def test_generated_texts_are_deduplicated_against_each_other_first_one_wins():
    g = guard(("corpus", "c1", OTHER))
    assert g.check("g1", minhash(BASE, NUM_PERM)) is None
    assert g.check("g1", minhash(BASE, NUM_PERM)).reason == "exact_duplicate"
    second = g.check("g2", minhash(NEAR, NUM_PERM))
    assert second.reason == "near_duplicate" and "generated row g1" in second.detail
