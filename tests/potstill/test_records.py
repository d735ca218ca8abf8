import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potstill.rows.records import (Bounds, Malformed, Record, Rejection, dedup_key, iter_rows, normalise_text,
                              read_split, stable_id, validate)

LABELS = ["negative", "positive"]


def check(raw, **kw):
    args = dict(source="seed", input_ref="f:1", text_field="text", label_field="label",
                labels=LABELS, bounds=Bounds(3, 40))
    args.update(kw)
    return validate(raw, **args)


@pytest.mark.parametrize("raw, reason", [
    (Malformed("invalid JSON"), "malformed_record"),
    ({"label": "positive"}, "missing_text"),
    ({"text": None, "label": "positive"}, "missing_text"),
    ({"text": 42, "label": "positive"}, "non_string_text"),
    ({"text": " \n\t ", "label": "positive"}, "empty_text"),
    ({"text": "ok", "label": "positive"}, "text_too_short"),
    ({"text": "x" * 41, "label": "positive"}, "text_too_long"),
    ({"text": "fine text"}, "missing_label"),
    ({"text": "fine text", "label": "neutral"}, "unknown_label"),
])
def test_bad_rows_are_rejected_with_a_reason(raw, reason):
    out = check(raw)
    assert isinstance(out, Rejection)
    assert out.reason == reason and out.input_ref == "f:1" and out.detail


def test_valid_row_is_normalised_and_hashed():
    out = check({"text": "  Great\u00a0 film\n", "label": "positive"})
    assert isinstance(out, Record)
    assert out.text == "Great film" and out.gold_label == "positive"
    assert out.id == stable_id("Great film") and len(out.id) == 16


def test_id_is_stable_under_whitespace_and_unicode_forms():
    assert stable_id(normalise_text("caf\u0065\u0301  au lait")) == stable_id(normalise_text("caf\u00e9 au lait"))


def test_iter_rows_reads_each_format(tmp_path):
    rows = [{"text": "a b c"}, {"text": "d, \"e\"\nf"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{bad\n[1]\n")
    (tmp_path / "x.csv").write_text('text\n"a b c"\n"d, ""e""\nf"\n')
    for name in ("x.parquet", "x.csv"):
        with open(tmp_path / name, "rb") as fh:
            assert [r for _, r in iter_rows(fh, name)] == rows
    with open(tmp_path / "x.jsonl", "rb") as fh:
        got = list(iter_rows(fh, "x.jsonl"))
    assert [r for _, r in got[:2]] == rows
    assert [n for n, _ in got] == [1, 2, 3, 4]
    assert all(isinstance(r, Malformed) for _, r in got[2:])


def test_read_split_globs_and_counts(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"t": "one review", "y": "positive"}\n{"t": "", "y": "negative"}\n')
    (tmp_path / "b.jsonl").write_text('{"t": "two review", "y": "bogus"}\n')
    records, rejected = read_split(str(tmp_path / "*.jsonl"), source="test", text_field="t",
                                   label_field="y", labels=LABELS)
    assert [r.text for r in records] == ["one review"]
    assert sorted(r.reason for r in rejected) == ["empty_text", "unknown_label"]
    assert rejected[0].input_ref.endswith(":2") or rejected[1].input_ref.endswith(":2")


def test_read_split_no_match_names_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        read_split(str(tmp_path / "nothing-here*.csv"), source="test", text_field="text")


# -- the comparison key: invisible and compatibility characters -------------------------------

PLAIN = "a test review, word for word"
DISGUISED = {
    "zero_width_space": "a test re\u200bview, word for word",
    "soft_hyphen": "a test re\u00adview, word for word",
    "word_joiner": "a test\u2060 review, word for word",
    "bom_inside": "a \ufefftest review, word for word",
    "bom_first": "\ufeffa test review, word for word",
    "variation_selector": "a test review\ufe0f, word for word",
    "tag_characters": "a test review, word\U000e0041\U000e007f for word",
    "bidi_marks": "\u202aa test review, word for word\u202c\u200e",
    "full_width": "ａ ｔｅｓｔ ｒｅｖｉｅｗ， ｗｏｒｄ ｆｏｒ ｗｏｒｄ",
    "ideographic_space": "a test\u3000review, word for\u2003word",
}


@pytest.mark.parametrize("case", sorted(DISGUISED))
def test_invisible_and_compatibility_forms_share_the_plain_texts_id(case):
    text = DISGUISED[case]
    out = check({"text": text, "label": "positive"}, bounds=Bounds())
    assert isinstance(out, Record) and out.id == check({"text": PLAIN, "label": "positive"}).id
    assert dedup_key(text) == PLAIN and stable_id(text) == stable_id(PLAIN)
    if case not in ("ideographic_space",):  # whitespace is folded as before; the rest stays as read
        assert out.text == text.strip()


def test_the_key_keeps_case_and_real_differences():
    assert stable_id("A Test Review") != stable_id("a test review")
    assert stable_id("a test review") != stable_id("a test reviews")
    assert dedup_key("ﬁne Ⅳ ①") == "fine IV 1" and dedup_key(dedup_key("x\u3164y")) == dedup_key("x\u3164y")


@pytest.mark.parametrize("text", ["\u200b", "\ufeff", "\u200b\u2060 \u00ad\ufeff", "\u3164", " \u180e\n"])
def test_a_text_of_invisible_characters_only_is_empty(text):
    out = check({"text": text, "label": "positive"})
    assert isinstance(out, Rejection) and out.reason == "empty_text"


def test_min_chars_counts_visible_characters():
    out = check({"text": "ok\u200b\u200b\u200b", "label": "positive"})
    assert isinstance(out, Rejection) and out.reason == "text_too_short"


def test_the_ignorable_set_is_unicodes_default_ignorable_code_points():
    regex = pytest.importorskip("regex")
    from potstill.rows.records import IGNORABLE

    unicode_set = regex.compile(r"\p{Default_Ignorable_Code_Point}")
    assert [c for c in range(0x110000) if bool(unicode_set.match(chr(c))) !=
            bool(IGNORABLE.match(chr(c)))] == []


def test_an_option_of_invisible_characters_only_is_empty():
    raw = {"text": "which one?", "label": "A", "choices": ["yes", "\u200b\ufeff"]}
    out = check(raw, labels=["A", "B"], choices_field="choices")
    assert isinstance(out, Rejection) and out.reason == "bad_choices"
    ok = check({**raw, "choices": ["yes", "n\u200bo"]}, labels=["A", "B"], choices_field="choices")
    assert isinstance(ok, Record) and ok.choices == ("yes", "n\u200bo")
    assert ok.id == check({**raw, "choices": ["yes", "no"]}, labels=["A", "B"],
                          choices_field="choices").id


def test_a_label_that_differs_only_by_case_or_spaces_gets_a_suggestion():
    from potstill.rows.records import did_you_mean

    assert did_you_mean("Account", ["account", "billing"]) == "account"
    assert did_you_mean("credit card", ["credit_card", "refund"]) == "credit_card"
    assert did_you_mean("acount", ["account"]) is None  # a typo is not a case difference
    assert did_you_mean("a b", ["ab", "a_b"]) is None    # two candidates: no guess


def test_with_values_keeps_every_field_and_the_last_value_set_wins():
    import dataclasses
    import pickle

    record = Record("id1", "text", "generated", "pos", "g.jsonl:3", "neg", ("a", "b"))
    later = record.with_values(x=1, y=[2]).with_values(x=3)
    assert [getattr(later, f.name) for f in dataclasses.fields(Record)][:-1] == \
        [getattr(record, f.name) for f in dataclasses.fields(Record)][:-1]
    assert later.values == (("x", 1), ("y", [2]), ("x", 3)) and record.values == ()
    assert later.value("x") == 3 and later.value("y") == [2] and later.value("z", "none") == "none"
    assert later.with_values(x=None).value("x", "unset") is None  # a value set to None is set
    assert pickle.loads(pickle.dumps(later)) == later
