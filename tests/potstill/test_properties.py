"""Properties of reading and staging, checked on generated corpora (hypothesis): rows, encodings,
CSV dialects, compression and Unicode disguises.

- Every record read is published, rejected or filtered exactly once, referenced by its first
  physical line; a broken CSV quote never swallows the rows after it; every rejection keeps its
  reason and the record as read.
- A text that differs from a test text only in invisible characters (zero-width space, soft
  hyphen, word joiner, BOM, ...), full-width or other NFKC compatibility forms, canonical
  decomposition or whitespace has the test text's key, and is never published; a case variant
  is a different text (the key keeps case) and is published.
- A text that is empty once normalised is `empty_text`; a published text is the text as read,
  NFC and whitespace-normalised only (its invisible characters and compatibility forms stay).

Two levels: the readers and keys on many examples (no Beam), and the whole job (real
DirectRunner, DuckDB, great-expectations, the tiny random teacher) on a few. The examples are
derived from each test's name (derandomize) and nothing is saved between runs (database=None).
"""
import bz2
import csv
import gzip
import hashlib
import io
import json
import unicodedata
from collections import Counter
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from potstill.beam_pipelines.pipeline import run
from potstill.config.core import parse_config
from potstill.rows.readers import Row
from potstill.rows.records import Record, Rejection, dedup_key, read_file, stable_id, validate

LABELS = ["negative", "positive"]
BASE = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
MANY = settings(BASE, max_examples=200)
JOBS = settings(BASE, max_examples=2)  # and one hand-picked case each

# Characters that render as nothing (Unicode Default_Ignorable_Code_Point, named here from the
# standard, not from the library's table), whitespace of every kind, compatibility forms.
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u00ad", "\u2060", "\ufeff", "\u034f", "\u061c",
             "\u180e", "\u200e", "\u200f", "\u202a", "\u202e", "\u2062", "\u2066", "\u2069",
             "\ufe00", "\ufe0f", "\u3164", "\uffa0", "\u115f", "\u1160", "\U000e0041",
             "\U000e007f", "\U000e0100"]
WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u00a0", "\u1680",
              "\u2002", "\u2003", "\u2009", "\u200a", "\u202f", "\u205f", "\u3000", "\u2028",
              "\u2029"]
SPECIAL = INVISIBLE + WHITESPACE + list('",;\\\x00\'{}[]') + [
    "Ａ", "ｂ", "１", "ﬁ", "𝐚", "²", "é", "e\u0301", "\u212b", "\u00c5", "…", "\U0001f600"]
# A surrogate stands for one undecodable byte (Python's surrogateescape): the byte is written as is.
BAD_BYTE = {"utf-8": "\udcff", "cp1252": "\udc81", "shift_jis": "\udc80", "gbk": "\udc80"}
ENCODINGS = ["utf-8", "latin-1", "cp1252", "shift_jis", "gbk"]


def normalised(value: str) -> str:
    """The text as it must be stored: NFC, whitespace runs as one space, stripped."""
    return " ".join(unicodedata.normalize("NFC", value).split())


def escaped(text: str) -> str:
    """Undecodable bytes as \\xNN, backslashes doubled: how `raw` shows a bad line."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else "\\\\" if c == "\\" else c for c in text)


# -- generated corpus files ------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One record to write. kind: ok (a text), bad (its text holds a byte invalid in the
    encoding), broken (JSON cut short; CSV: a quote that never closes), not_object (JSON),
    missing (no text field), non_string (JSON: a number), extra (CSV: one cell too many),
    short (CSV: one cell only), blank (not a record: an empty or blank line)."""
    kind: str
    text: str = ""
    other: str = "x"


@dataclass(frozen=True)
class Layout:
    fmt: str = "jsonl"
    encoding: str = "utf-8"
    bom: bool = False
    compression: str = ""
    ensure_ascii: bool = False   # JSONL: non-ASCII as \\u escapes
    delimiter: str = ","         # CSV (a tab: .tsv)
    quoting: int = csv.QUOTE_MINIMAL
    terminator: str = "\n"
    text_first: bool = True      # CSV: the header is text,meta (else meta,text)
    final_eol: bool = True

    @property
    def name(self) -> str:
        ext = "jsonl" if self.fmt == "jsonl" else "tsv" if self.delimiter == "\t" else "csv"
        return f"u.{ext}{self.compression}"


@dataclass(frozen=True)
class Expected:
    """Where a record must end: `reason` None for a valid text (its `value` as read), else the
    rejection's reason and `raw`."""
    line: int
    reason: str | None
    value: str | None = None
    raw: str | None = None


def surrogate(c: str) -> bool:
    return 0xD800 <= ord(c) <= 0xDFFF


def outcome(value: str) -> str | None:
    """The rejection a text read as `value` gets, or None."""
    if any(map(surrogate, value)):
        return "bad_encoding"  # a JSON \\ud800 escape: half a UTF-16 pair, no character
    if "\x00" in value:
        return "nul_character"
    return None if dedup_key(normalised(value)) else "empty_text"


def _jsonl(layout: Layout, item: Item, number: int) -> tuple[str, Expected | None]:
    dumps = lambda obj: json.dumps(obj, ensure_ascii=layout.ensure_ascii)  # noqa: E731
    if item.kind == "blank":
        return item.text, None
    if item.kind == "bad":
        line = json.dumps({"text": item.text + BAD_BYTE[layout.encoding]}, ensure_ascii=False)
        return line, Expected(number, "bad_encoding", raw=escaped(line))
    line = {"ok": lambda: dumps({"n": item.other, "text": item.text} if item.other else
                                {"text": item.text}),
            "broken": lambda: dumps({"text": item.text})[:-2],
            "not_object": lambda: dumps([item.text]),
            "missing": lambda: dumps({"body": item.text}),
            "non_string": lambda: dumps({"text": len(item.text)})}[item.kind]()
    if item.kind == "ok":
        value = json.loads(line)["text"]
        return line, Expected(number, outcome(value), value, line)
    if item.kind == "missing" and outcome(json.loads(line)["body"]) == "bad_encoding":
        return line, Expected(number, "bad_encoding", raw=line)  # any field, not only the text
    reason = {"broken": "malformed_record", "not_object": "malformed_record",
              "missing": "missing_text", "non_string": "non_string_text"}[item.kind]
    return line, Expected(number, reason, raw=line)


def _csv(layout: Layout, item: Item, number: int) -> tuple[str, Expected | None]:
    if item.kind == "blank":
        return "", None
    if item.kind == "broken":  # an opening quote, and nothing that could close it
        # (nor one opened above: `",` after a stray quote is a closing quote, a real record)
        clean = lambda s: "".join(c for c in s if c not in '"\r\n')  # noqa: E731
        line = '"open ' + clean(item.text) + layout.delimiter + clean(item.other)
        return line, Expected(number, "malformed_record", raw=line)
    text = item.text + (BAD_BYTE[layout.encoding] if item.kind == "bad" else "")
    cells = [text, item.other] if layout.text_first else [item.other, text]
    if item.kind == "short":
        cells = cells[:1]
    elif item.kind == "extra":
        cells = cells + ["extra"]
    buf = io.StringIO()
    csv.writer(buf, delimiter=layout.delimiter, quoting=layout.quoting,
               lineterminator=layout.terminator).writerow(cells)  # it decides what to quote
    line = buf.getvalue().removesuffix(layout.terminator)
    if item.kind == "bad":
        return line, Expected(number, "bad_encoding", raw=escaped(line))
    if item.kind == "extra":
        return line, Expected(number, "malformed_record", raw=line)
    if item.kind == "short" and not layout.text_first:
        return line, Expected(number, "missing_text", raw=line)
    return line, Expected(number, outcome(text), text, line)


def build(layout: Layout, items: list[Item]) -> tuple[bytes, list[Expected]]:
    """The file's bytes, and what must become of each record in it."""
    lines, expected, number = [], [], 1
    if layout.fmt == "csv":
        header = ["text", "meta"] if layout.text_first else ["meta", "text"]
        lines.append(layout.delimiter.join(header))
        number = 2
    for item in items:
        line, exp = (_jsonl if layout.fmt == "jsonl" else _csv)(layout, item, number)
        lines.append(line)
        if exp is not None:
            expected.append(exp)
        number += line.count("\n") + 1
    eols = [("\r\n" if layout.fmt == "jsonl" and i % 3 == 2 else layout.terminator)
            for i in range(len(lines))]
    if not layout.final_eol:
        eols[-1] = ""
    text = "".join(line + eol for line, eol in zip(lines, eols))
    data = text.encode(layout.encoding, errors="surrogateescape")
    if layout.bom:
        data = b"\xef\xbb\xbf" + data
    if layout.compression == ".gz":
        data = gzip.compress(data, mtime=0)
    elif layout.compression == ".bz2":
        data = bz2.compress(data)
    return data, expected


def encodable(encoding: str, text: str) -> str:
    """`text` without the characters `encoding` cannot write, as that encoding reads it back."""
    kept = "".join(c for c in text if c.encode(encoding, errors="ignore"))
    return kept.encode(encoding).decode(encoding)


@st.composite
def layouts(draw, fmt=None, encoding=None) -> Layout:
    fmt = fmt or draw(st.sampled_from(["jsonl", "csv"]))
    encoding = encoding or draw(st.sampled_from(ENCODINGS))
    return Layout(fmt, encoding, bom=encoding == "utf-8" and draw(st.booleans()),
                  compression=draw(st.sampled_from(["", "", ".gz", ".bz2"])),
                  ensure_ascii=fmt == "jsonl" and draw(st.booleans()),
                  delimiter=draw(st.sampled_from([",", "\t"])),
                  quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
                  terminator=draw(st.sampled_from(["\n", "\r\n"])),
                  text_first=draw(st.booleans()), final_eol=draw(st.booleans()))


def texts(layout: Layout, max_size: int = 24) -> st.SearchStrategy[str]:
    """Texts the layout can write: any characters it encodes, the hostile ones above, and (JSONL
    with \\u escapes only) lone surrogates."""
    chars = st.one_of(st.characters(codec=None if layout.ensure_ascii else layout.encoding),
                      st.sampled_from(SPECIAL))
    if layout.ensure_ascii:
        chars = st.one_of(chars, st.characters(categories=["Cs"]))
    raw = st.one_of(st.lists(chars, max_size=max_size).map("".join),
                    st.sampled_from(["", " ", "\u200b", "\ufeff \u00ad\u3000", "plain words"]))
    if layout.ensure_ascii:
        return raw
    fit = raw.map(lambda t: encodable(layout.encoding, t))
    if layout.fmt == "csv" and layout.quoting == csv.QUOTE_MINIMAL and layout.terminator == "\n":
        # csv.writer leaves a field with a bare CR unquoted under an LF terminator; a reader
        # cannot tell that CR from a line end, so that is not a file a writer should produce
        fit = fit.map(lambda t: t.replace("\r", "\n"))
    return fit


@st.composite
def items(draw, layout: Layout) -> Item:
    kinds = ["ok", "ok", "ok", "broken", "blank"] + (
        ["missing", "not_object", "non_string"] if layout.fmt == "jsonl"
        else ["extra", "short", "broken"])  # a CSV row without text: short, text not first
    if layout.encoding in BAD_BYTE:
        kinds.append("bad")
    kind = draw(st.sampled_from(kinds))
    if kind == "blank":
        return Item(kind, draw(st.sampled_from(["", " ", "\t", " \t "]))
                    if layout.fmt == "jsonl" else "")
    text = draw(texts(layout))
    if kind in ("bad", "extra"):
        text = text.replace("\r", "").replace("\n", "")
    if kind == "bad":  # the line is written as is (not with \\u escapes): only what encodes
        text = encodable(layout.encoding, "".join(c for c in text if not surrogate(c)))
    other = draw(st.sampled_from(["", "x", "site, with a comma", 'a "quoted" word', "two\nlines"]))
    if layout.fmt == "csv" and kind in ("extra", "bad"):
        other = other.replace("\n", " ")
    return Item(kind, text, other)


def unambiguous(layout: Layout, rows: list[Item]) -> list[Item]:
    """`rows` where no cell after a broken CSV quote could close that quote: a quoted cell
    whose text starts with a delimiter or a line end (past leading quotes) would, and make one
    legal record of the broken line and the next (readers.py: it cannot be told from one)."""
    def safe(cell: str) -> str:
        return "x" + cell if cell.lstrip('"')[:1] in (layout.delimiter, "\r", "\n") else cell
    if layout.fmt != "csv":
        return rows
    first = next((i for i, r in enumerate(rows) if r.kind == "broken"), len(rows))
    return rows[:first] + [Item(r.kind, safe(r.text), safe(r.other)) for r in rows[first:]]


@st.composite
def corpora(draw) -> tuple[Layout, list[Item]]:
    layout = draw(layouts())
    return layout, unambiguous(layout, draw(st.lists(items(layout), min_size=1, max_size=12)))


# Hand-picked cases, checked besides the generated ones.
HOSTILE_CSV = (Layout("csv", "cp1252", compression=".gz", terminator="\r\n", final_eol=False),
               [Item("ok", "first review"), Item("broken", "never closed"),
                Item("ok", "second review"), Item("ok", "a text\nover two lines"),
                Item("bad", "caf\u00e9 and a byte cp1252 lacks"),
                Item("extra", "one cell too many"),
                Item("short", "a short row"), Item("ok", "\u00a0 \u00ad"), Item("blank"),
                Item("ok", "last review")])
LEAK_CSV = (Layout("csv", bom=True, terminator="\r\n"),
            [Item("ok", t) for t in [
                "a test re\u200bview, word for word", "a\u3000test\nreview,  word for word",
                "ａ ｔｅｓｔ ｒｅｖｉｅｗ， ｗｏｒｄ ｆｏｒ ｗｏｒｄ", "A TEST REVIEW, WORD FOR WORD",
                "\ufeffa test re\u00adview, word for word\u2060", "a review of its own",
                "\u200b \u00ad\u3000"]],
            ["a test review, word for word"])


def ref_line(ref: str) -> int:
    return int(ref.rsplit(":", 1)[1])


def assert_read_as_expected(records, rejected, expected: list[Expected]):
    """Each expected record comes out once, at its line, where it must; nothing else does."""
    got = [ref_line(x.input_ref) for x in [*records, *rejected]]
    assert sorted(got) == [e.line for e in expected]  # nothing merged, nothing lost or doubled
    out = {ref_line(x.input_ref): x for x in [*records, *rejected]}
    for e in expected:
        x = out[e.line]
        if e.reason is None:
            assert isinstance(x, Record), (e, x)
            assert x.text == normalised(e.value)  # as read: NFC and whitespace only
            assert x.id == stable_id(x.text)
        else:
            assert isinstance(x, Rejection) and (x.reason, x.raw) == (e.reason, e.raw), (e, x)
            assert x.detail


# -- the readers and the keys: many examples -------------------------------------------------

@MANY
@given(corpus=corpora())
@example(corpus=(Layout("csv"), [Item("ok", "one"), Item("broken", "two"), Item("ok", "three"),
                                 Item("ok", "four\nfive")]))
@example(corpus=(Layout("jsonl", ensure_ascii=True), [Item("ok", "lone \ud800 surrogate"),
                                                      Item("ok", "after it")]))
@example(corpus=HOSTILE_CSV)
@example(corpus=LEAK_CSV[:2])
def test_every_record_read_is_a_record_or_a_rejection_once(corpus, tmp_path_factory):
    layout, rows = corpus
    data, expected = build(layout, rows)
    path = tmp_path_factory.mktemp("read") / layout.name
    path.write_bytes(data)
    records, rejected, digest = read_file(str(path), source="corpus", text_field="text",
                                          encoding=layout.encoding)
    assert_read_as_expected(records, rejected, expected)
    assert digest["rows"] == len(expected) and digest["bytes"] == len(data)
    assert digest["sha256"] == hashlib.sha256(data).hexdigest()


@st.composite
def visible_texts(draw) -> str:
    """Words of letters and digits (accented too) and punctuation, one space between them."""
    word = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789éüñçøÅ.,!?-'"), min_size=1, max_size=8)
    return " ".join(draw(st.lists(word, min_size=1, max_size=6)))


FULL_WIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)} | {" ": "\u3000"}
COMPAT = ({chr(0x61 + i): chr(0x1D41A + i) for i in range(26)}        # mathematical bold
          | {chr(0x41 + i): chr(0x1D5D4 + i) for i in range(26)}      # sans-serif bold
          | dict(zip("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")) | {"...": "…", "fi": "ﬁ", "fl": "ﬂ",
                                                       "ff": "ﬀ", "!!": "‼", "IJ": "Ĳ"})


@st.composite
def disguised(draw, text: str) -> str:
    """`text` with any of: invisible characters anywhere, characters in full-width or another
    compatibility form, canonically decomposed, its spaces as other whitespace runs, blank edges."""
    ops = draw(st.lists(st.sampled_from(["invisible", "full_width", "compat", "nfd",
                                         "whitespace", "edges", "bom"]), min_size=1, max_size=4))
    for op in ops:
        if op == "invisible":
            for _ in range(draw(st.integers(1, 3))):
                at = draw(st.integers(0, len(text)))
                text = text[:at] + draw(st.sampled_from(INVISIBLE)) + text[at:]
        elif op in ("full_width", "compat"):
            table = FULL_WIDTH if op == "full_width" else COMPAT
            for old in draw(st.lists(st.sampled_from(sorted(table)), max_size=6)):
                text = text.replace(old, table[old])
        elif op == "nfd":
            text = unicodedata.normalize("NFD", text)
        elif op == "whitespace":
            run = st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=3)
            text = "".join(draw(run) if c == " " else c for c in text)
        elif op == "edges":
            run = st.text(st.sampled_from(WHITESPACE + INVISIBLE), max_size=3)
            text = draw(run) + text + draw(run)
        else:
            text = "\ufeff" + text
    return text


def validated(value: str) -> Record | Rejection:
    line = json.dumps({"text": value}, ensure_ascii=False)
    return validate(Row({"text": value}, line), source="corpus", input_ref="u.jsonl:1",
                    text_field="text")


@MANY
@given(pair=visible_texts().flatmap(lambda t: st.tuples(st.just(t), disguised(t))))
@example(pair=("a test review", "a\u3000te\u200bst ｒｅｖｉｅｗ\u00ad"))
def test_a_disguised_copy_has_the_texts_key_and_keeps_its_disguise(pair):
    plain, copy = map(validated, pair)
    assert isinstance(plain, Record) and isinstance(copy, Record), (plain, copy)
    assert copy.id == plain.id and dedup_key(copy.text) == dedup_key(plain.text)
    assert copy.text == normalised(pair[1])  # the copy is stored as read, disguise and all


@MANY
@given(text=visible_texts())
def test_case_is_part_of_the_key(text):
    for variant in {text.upper(), text.lower(), text.swapcase()} - {text}:
        assert validated(variant).id != validated(text).id


@MANY
@given(value=st.text(st.sampled_from(INVISIBLE + WHITESPACE + ["\u2007", "\u180e"]), max_size=12))
def test_a_text_of_nothing_visible_is_empty_text_with_its_raw(value):
    out = validated(value)
    assert isinstance(out, Rejection) and out.reason == "empty_text"
    assert out.raw == json.dumps({"text": value}, ensure_ascii=False)


@MANY
@given(before=st.text(max_size=10), after=st.text(max_size=10),
       letter=st.characters(categories=["L", "N"]).filter(
           lambda c: c not in INVISIBLE and unicodedata.normalize("NFKC", c).strip()))
def test_a_text_with_a_letter_or_digit_is_not_empty_text(before, letter, after):
    value = (before + letter + after).replace("\x00", "")
    out = validated(value)
    assert not isinstance(out, Rejection) or out.reason != "empty_text", (value, out)


# -- the whole job: a few examples -----------------------------------------------------------

def run_job(folder, tiny_lm, corpus: dict) -> dict:
    cfg = parse_config({"dataset": "p", "output_root": str(folder / "out"),
                        "task": {"labels": LABELS}, "corpus": corpus,
                        "teacher": {"model": tiny_lm, "batch_size": 8}})
    version = run(cfg, test_pipeline=BeamTestPipeline())
    return {"totals": json.loads((version / "manifest.json").read_text())["counts"]["totals"],
            "published": pq.read_table(version / "data").to_pylist(),
            "rejected": pq.read_table(version / "rejected.parquet").to_pylist(),
            "filtered": pq.read_table(version / "filtered.parquet").to_pylist()}


def assert_job_as_expected(v: dict, expected: list[Expected], test_keys: set[str]):
    """The job's outputs against what each record must become: rejections with their raw;
    one published row per key that is no test text's; the other copies filtered."""
    assert sorted((ref_line(r["input_ref"]), r["reason"], r["raw"]) for r in v["rejected"]) == \
        sorted((e.line, e.reason, e.raw) for e in expected if e.reason)
    groups: dict[str, list[str]] = {}
    for e in expected:
        if e.reason is None:
            groups.setdefault(dedup_key(normalised(e.value)), []).append(normalised(e.value))
    published = {dedup_key(r["text"]): r["text"] for r in v["published"]}
    assert len(published) == len(v["published"])
    assert set(published) == set(groups) - test_keys  # no test text, in any disguise
    for key, text in published.items():
        assert text in groups[key]  # exactly as read (normalised), not its key
    filtered = Counter((dedup_key(r["text"]), r["filter_reason"]) for r in v["filtered"])
    want = Counter()
    for key, copies in groups.items():
        want[(key, "duplicate")] += len(copies) - 1
        want[(key, "test_overlap")] += key in test_keys
    assert filtered == +want
    totals = v["totals"]
    assert totals["read"] == len(expected) == sum(totals[k] for k in ("published", "rejected",
                                                                     "filtered"))
    assert (totals["published"], totals["rejected"], totals["filtered"]) == (
        len(v["published"]), len(v["rejected"]), len(v["filtered"]))


@st.composite
def leak_cases(draw):
    """Test texts; a corpus of disguised copies of them, case variants, other texts and texts
    of nothing visible, in any order, as JSONL or CSV in UTF-8."""
    tests = draw(st.lists(visible_texts(), min_size=1, max_size=3, unique_by=dedup_key)
                 .filter(lambda ts: "a review of its own" not in ts))  # one row is published
    corpus = [draw(disguised(t)) for t in tests for _ in range(draw(st.integers(1, 3)))]
    corpus += [t.swapcase() for t in tests if draw(st.booleans())]
    corpus += draw(st.lists(visible_texts(), max_size=4)) + ["a review of its own"]
    nothing = st.text(st.sampled_from(INVISIBLE + WHITESPACE), max_size=4)
    corpus += draw(st.lists(nothing, max_size=2))
    layout = draw(layouts(encoding="utf-8"))
    return layout, [Item("ok", t) for t in draw(st.permutations(corpus))], tests


@JOBS
@given(case=leak_cases())
@example(case=LEAK_CSV)
def test_the_job_publishes_no_test_text_in_any_disguise(case, tiny_lm, tmp_path_factory):
    layout, rows, tests = case
    folder = tmp_path_factory.mktemp("leak")
    data, expected = build(layout, rows)
    (folder / layout.name).write_bytes(data)
    (folder / "t.jsonl").write_text("".join(json.dumps({"text": t, "label": "positive"}) + "\n"
                                            for t in tests), encoding="utf-8")
    v = run_job(folder, tiny_lm, {"unlabeled": {"path": str(folder / layout.name)},
                                  "test": {"path": str(folder / "t.jsonl"),
                                           "label_field": "label"}})
    assert_job_as_expected(v, expected, {dedup_key(normalised(t)) for t in tests})


@JOBS
@given(corpus=corpora())
@example(corpus=HOSTILE_CSV)
def test_the_job_accounts_for_every_record_of_a_hostile_file(corpus, tiny_lm, tmp_path_factory):
    layout, rows = corpus
    rows = [*rows, Item("ok", "an ordinary review")]  # the corpus may not be empty
    folder = tmp_path_factory.mktemp("job")
    data, expected = build(layout, rows)
    (folder / layout.name).write_bytes(data)
    v = run_job(folder, tiny_lm, {"unlabeled": {"path": str(folder / layout.name),
                                                "encoding": layout.encoding}})
    assert_job_as_expected(v, expected, set())


# -- what the properties found ---------------------------------------------------------------

def test_a_json_escape_of_a_lone_surrogate_is_a_rejected_row_not_a_crash(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text('{"text": "lone \\ud800 half"}\n{"text": "a pair \\ud83d\\ude00"}\n')
    records, rejected, _ = read_file(str(path), source="corpus", text_field="text")
    assert [r.text for r in records] == ["a pair \U0001f600"]
    assert [(r.input_ref[-2:], r.reason, r.raw) for r in rejected] == [
        (":1", "bad_encoding", '{"text": "lone \\ud800 half"}')]
    assert "\\ud800" in rejected[0].detail
