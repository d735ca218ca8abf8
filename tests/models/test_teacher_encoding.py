"""How the teacher tokenises rows (models/teacher/hf.py TeacherBase.encode_many): a text is
tokenised alone only where it may be longer than `max_input_tokens`; every row gets the ids
that cutting every text by its own token count gives, on the tests' tokenizer and on the
packaged teachers' own."""
import random

import pytest

from potstill.models.teacher.hf import PREFIX_BYTES, TeacherBase
from potstill.models.teacher.prompts import Demo

LIMIT = 16
PIECES = ["good", "bad", " the", "plot", "pacing", "\u00e9t\u00e9", "\u00fcber", "\u0444\u0438\u043b\u044c\u043c",
          "\u6620\u753b", "\U0001f600", "\ufb01ne", "\u337f", "e\u0301", "  ", "\n", "\t", "42", "3.14", "!!", "...",
          "\u00a0", "\u2581x", "<b>", "\u0130stanbul"]


def corpus(teacher: TeacherBase, n: int = 400) -> list[str]:
    """Texts from a few bytes to several times the limit's worth of tokens: words, accents,
    Cyrillic and CJK, emoji, ligatures and squared forms NFKC expands, combining marks, runs of
    whitespace, and the tokenizer's own special tokens as text."""
    rng = random.Random(0)
    pieces = PIECES + [t for t in (teacher.tokenizer.eos_token, teacher.tokenizer.pad_token) if t]
    sizes = [rng.randint(1, 4) if i % 2 else rng.randint(1, 3 * LIMIT) for i in range(n)]
    return [" ".join(rng.choice(pieces) for _ in range(size)) for size in sizes]


@pytest.fixture(params=["tiny", pytest.param("smollm2-135m-instruct", marks=pytest.mark.slow),
                        pytest.param("qwen2.5-0.5b-instruct", marks=pytest.mark.slow)])
def teacher(request, tiny_lm) -> TeacherBase:
    if request.param == "tiny":
        path = tiny_lm
    else:
        from potstill.models.registry import resolve_model

        path = resolve_model(request.param).path
    return TeacherBase(path, ["negative", "positive"], max_input_tokens=LIMIT, demo_max_tokens=8)


def test_rows_get_the_ids_of_texts_cut_by_their_own_token_counts(teacher):
    rows = corpus(teacher)
    demos = [[Demo(f"gold row {j} " * (1 + j * 5), "positive") for j in range(i % 3)] for i in range(len(rows))]

    def alone(text, row_demos):  # every text tokenised and cut, as before the byte bound
        cut = [Demo(teacher.truncate(d.text, 8), d.answer) for d in row_demos]
        return teacher._encoded(teacher._ids(teacher.prompt.render(teacher.truncate(text), cut)), bool(cut))

    assert teacher.encode_many(rows, demos) == [alone(t, d) for t, d in zip(rows, demos)]
    fits = [teacher._fits(t, LIMIT) for t in rows]
    cut = [len(teacher._ids(t)) > LIMIT for t in rows]
    assert sum(fits) > 40 and sum(cut) > 100  # both paths ran
    assert not any(f and c for f, c in zip(fits, cut))  # no text the bound passed was too long


def test_the_byte_bound_holds_for_every_text(teacher):
    """A token covers at least one byte of the normalised text; a pre-tokenizer adds at most
    PREFIX_BYTES before it."""
    assert teacher._bounded
    normalizer = teacher.tokenizer.backend_tokenizer.normalizer
    for text in corpus(teacher):
        normalised = normalizer.normalize_str(text) if normalizer else text
        assert len(teacher._ids(text)) <= len(normalised.encode("utf-8")) + PREFIX_BYTES, text


def test_ids_are_the_tokenizer_calls_even_after_a_call_set_truncation(teacher):
    rows = corpus(teacher, 50)
    expected = teacher.tokenizer(rows, add_special_tokens=False)["input_ids"]
    assert teacher._ids_many(rows) == expected
    teacher.tokenizer(rows[:2], truncation=True, max_length=3)  # leaves the Rust tokenizer truncating
    assert teacher.tokenizer.backend_tokenizer.truncation is not None
    assert teacher._ids_many(rows) == expected
    assert max(len(ids) for ids in expected) > 3


def test_a_tokenizer_outside_the_bound_tokenises_every_text(tiny_lm, monkeypatch):
    teacher = TeacherBase(tiny_lm, ["negative", "positive"], max_input_tokens=LIMIT)
    inflated = TeacherBase._ids_many
    monkeypatch.setattr(TeacherBase, "_ids_many", lambda self, texts: [ids * 9 for ids in inflated(self, texts)])
    assert not teacher._bounded
    assert not teacher._fits("a", LIMIT)
    seen = []
    monkeypatch.setattr(TeacherBase, "_ids_many", lambda self, texts: seen.append(list(texts)) or inflated(self, texts))
    teacher.encode_many(["a", "b c"])
    assert seen[0] == ["a", "b c"]  # both texts tokenised alone before their prompts
