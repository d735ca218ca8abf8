"""Hostile input, file by file and row by row (no model, no Beam): nothing is silently replaced,
every row read is accounted for with its evidence, and whole-file problems are one clear error.
The job-level run over the same corpus is tests/beam_pipelines/test_hostile_corpus.py."""
import bz2
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hostile_corpus as hc
from potstill.config.core import ConfigError, parse_config
from potstill.rows.records import (Bounds, InputFileError, MissingInputError, Record, check_file,
                              check_input_files, iter_rows, read_split)

LABELS = ["negative", "positive"]


def read(path, **kw):
    """read_split over one file; asserts the counts reconcile: every row is a Record or a
    Rejection, and nothing else."""
    kw = {"source": "corpus", "text_field": "text", **kw}
    records, rejected = read_split(str(path), **kw)
    with open(path, "rb") as fh:
        rows = list(iter_rows(fh, str(path), kw.get("encoding", "utf-8")))
    assert len(records) + len(rejected) == len(rows)
    return records, rejected


def by_ref(records, rejected):
    return {int(x.input_ref.rsplit(":", 1)[1]): x for x in [*records, *rejected]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    hc.build(folder)
    return folder


@pytest.fixture(scope="module")
def a_rows(corpus):
    return by_ref(*read(corpus / "unlabeled" / "a.jsonl"))


@pytest.fixture(scope="module")
def wide_rows(corpus):
    return by_ref(*read(corpus / "unlabeled" / "wide.csv"))


# -- rows ------------------------------------------------------------------------------------

def test_invalid_utf8_is_rejected_with_escaped_bytes_and_offset(a_rows):
    bad = a_rows[4]
    assert bad.reason == "bad_encoding" and bad.input_ref.endswith("a.jsonl:4")
    assert bad.raw == '{"text": "caf\\xe9 in latin-1 inside a utf-8 file"}'
    assert "byte 0xe9 at byte offset 13 of line 4" in bad.detail
    assert "\ufffd" not in bad.raw and all("\ufffd" not in r.text for r in a_rows.values()
                                           if isinstance(r, Record))


def test_mixed_encodings_in_one_file_reject_only_the_bad_line(a_rows):
    assert a_rows[5].text == "café in proper utf-8 in the same file"
    assert a_rows[4].reason == "bad_encoding"


def test_declared_encoding_decodes_latin1(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_bytes(b'{"text": "caf\xe9 cr\xe8me"}\n')
    records, rejected = read(path, encoding="latin-1")
    assert [r.text for r in records] == ["café crème"] and not rejected
    records, rejected = read(path)  # the default, utf-8, refuses the same bytes
    assert not records and rejected[0].reason == "bad_encoding"


@pytest.mark.parametrize("encoding, message", [("utf-16", "not an ASCII-compatible text"),
                                               ("klingon-8", "unknown encoding"),
                                               ("rot13", "not an ASCII-compatible text")])
def test_encoding_key_is_validated(encoding, message):
    raw = {"dataset": "d", "task": {"labels": LABELS},
           "corpus": {"unlabeled": {"path": "u.jsonl", "encoding": encoding}}}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_malformed_json_keeps_the_line_and_its_physical_number(a_rows):
    bad = a_rows[12]  # lines 2 and 11 are blank: they still count
    assert bad.reason == "malformed_record" and bad.raw == '{"text": "broken json line"'
    assert bad.detail.startswith("invalid JSON: ") and "column" in bad.detail


def test_bom_at_file_start_is_part_of_the_encoding(a_rows, tmp_path):
    assert a_rows[1].text == "a review that starts after a byte-order mark"
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\r\nfine,positive\r\n")
    records, _ = read(path, label_field="label", labels=LABELS, source="seed")
    assert [(r.text, r.gold_label, r.input_ref[-2:]) for r in records] == [("fine", "positive", ":2")]
    path = tmp_path / "bom-mid.jsonl"  # a BOM inside the file is a character, not an encoding
    path.write_bytes(b'{"text": "one"}\n\xef\xbb\xbf{"text": "two"}\n')
    records, rejected = read(path)
    assert [r.text for r in records] == ["one"] and rejected[0].reason == "malformed_record"


def test_crlf_line_endings_are_ordinary(a_rows, wide_rows):
    assert a_rows[3].text == "a review with windows line endings"
    assert wide_rows[3].text == "a review whose quoted field spans two lines"
    assert sorted(wide_rows) == [2, 3, 5, 6]  # the two-line record is referenced by its first line


def test_nul_bytes(a_rows, tmp_path):
    assert a_rows[6].reason == "nul_character" and "U+0000" in a_rows[6].detail
    assert a_rows[7].reason == "malformed_record" and "control character" in a_rows[7].detail
    assert a_rows[7].raw == '{"text": "a raw NUL \x00 byte"}'
    path = tmp_path / "nul.csv"
    path.write_bytes(b"text\nnul\x00inside\n")
    assert read(path)[1][0].reason == "nul_character"


def test_a_50mb_line_is_rejected_with_its_raw_cut_and_marked(a_rows):
    big = a_rows[8]
    assert big.reason == "text_too_long" and big.input_ref.endswith(":8")
    total = len(hc.A_LINES[7]) - 1
    assert big.raw.startswith('{"text": "xxx') and len(big.raw) < 2100
    assert big.raw.endswith(f"…[truncated: {total:,} chars in all]")
    assert f"raw truncated to its first 2,000 of {total:,} chars" in big.detail


def test_a_thousand_columns(wide_rows, tmp_path):
    assert wide_rows[2].text == "a review in a thousand-column csv"
    extra = wide_rows[6]
    assert extra.reason == "malformed_record" and extra.detail.startswith("CSV row has 1001 cells")
    assert extra.raw.endswith(f"…[truncated: {len(hc.WIDE_LINES[4]) - 2:,} chars in all]")
    table = pa.table({f"c{i}": [i, i] for i in range(999)} | {"text": ["wide one", "w"]})
    pq.write_table(table, tmp_path / "wide.parquet")
    records, rejected = read(tmp_path / "wide.parquet", bounds=Bounds(3))
    assert [r.text for r in records] == ["wide one"] and rejected[0].reason == "text_too_short"
    assert rejected[0].input_ref.endswith("wide.parquet:2") and len(rejected[0].raw) < 2100


def test_csv_cp1252_byte_and_extra_cells(wide_rows):
    bad = wide_rows[5]
    assert bad.reason == "bad_encoding" and bad.raw.startswith("a cp1252 \\x93quote\\x94 in")
    assert "byte 0x93 at byte offset 9 of line 5" in bad.detail


def test_label_with_trailing_spaces_is_stripped(corpus):
    records, rejected = read(corpus / "seed" / "labels.jsonl", source="seed", label_field="label",
                             labels=LABELS)
    rows = by_ref(records, rejected)
    assert rows[1].gold_label == "positive"
    with pytest.raises(ConfigError, match="without surrounding whitespace"):
        parse_config({"dataset": "d", "task": {"labels": ["negative", "positive "]},
                      "corpus": {"unlabeled": {"path": "u.jsonl"}}})


def test_numeric_label_column(corpus, tmp_path):
    path = corpus / "seed" / "numeric.parquet"
    records, rejected = read(path, source="seed", label_field="label", labels=LABELS)
    assert not records and [r.reason for r in rejected] == ["unknown_label"] * 2
    assert rejected[0].detail == "label '0' is not one of ['negative', 'positive']"
    records, _ = read(path, source="seed", label_field="label", labels=["0", "1"])
    assert [r.gold_label for r in records] == ["0", "1"]  # integers match by their decimal form
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"text": "float", "label": 1.0}\n{"text": "bool", "label": true}\n')
    _, rejected = read(odd, source="seed", label_field="label", labels=["0", "1", "True"])
    assert [r.reason for r in rejected] == ["unknown_label"] * 2
    assert "is a float" in rejected[0].detail and "is a bool" in rejected[1].detail


def test_nested_json_in_the_text_field(a_rows):
    assert a_rows[9].reason == "non_string_text" and a_rows[9].raw == '{"text": {"nested": "json object"}}'
    assert a_rows[10].text == '{"nested": "json as a string"}'


def test_duplicate_ids_within_and_across_files_are_content_ids(corpus, a_rows):
    assert a_rows[13].id == a_rows[14].id != a_rows[15].id  # the input's own "id" is ignored
    records, _ = read(corpus / "unlabeled" / "b.jsonl.gz")
    assert records[0].id == a_rows[16].id and records[0].input_ref.endswith("b.jsonl.gz:1")


def test_parquet_string_column_with_invalid_utf8(tmp_path):
    raw = pa.array([b"fine text", b"bad \xff text"], pa.binary())
    text = pa.Array.from_buffers(pa.string(), 2, raw.buffers())
    pq.write_table(pa.table({"text": text}), tmp_path / "bad.parquet")
    records, rejected = read(tmp_path / "bad.parquet")
    assert [r.text for r in records] == ["fine text"]
    assert rejected[0].reason == "bad_encoding" and rejected[0].input_ref.endswith("bad.parquet:2")
    assert "byte 0xff at byte offset 4" in rejected[0].detail and "\\xff" in rejected[0].raw


# -- whole files -----------------------------------------------------------------------------

def _parquet_bytes():
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": ["a"] * 100, "label": ["positive"] * 100}), sink)
    return sink.getvalue().to_pybytes()


FILE_CASES = {  # name -> (file name, bytes or None for a directory, message)
    "missing": ("gone.jsonl", "absent", "no such file"),
    "directory": ("folder.jsonl", None, "is a directory"),
    "empty": ("empty.jsonl", b"", "is empty (0 bytes)"),
    "empty_parquet": ("empty.parquet", b"", "is empty (0 bytes)"),
    "truncated_parquet": ("cut.parquet", _parquet_bytes()[:300], "not a readable Parquet file"),
    "not_parquet": ("junk.parquet", b"hello, not parquet at all", "not a readable Parquet file"),
    "gzip_not_gzip": ("plain.jsonl.gz", b'{"text": "x"}\n', "not a .gz file (it starts with"),
    "truncated_gzip": ("cut.jsonl.gz", gzip.compress(b'{"text": "x"}\n' * 500)[:40],
                       "cannot be decompressed as .gz (truncated or corrupt)"),
    "corrupt_gzip": ("bits.jsonl.gz", (lambda z: z[:12] + bytes(b ^ 0x5A for b in z[12:]))(
        gzip.compress(b'{"text": "x"}\n' * 500)), "cannot be decompressed as .gz"),
    "bz2_not_bz2": ("plain.csv.bz2", b"text\nx\n", "not a .bz2 file"),
    "empty_after_gunzip": ("nothing.jsonl.gz", gzip.compress(b""), "0 bytes after decompression"),
    "csv_without_text": ("cols.csv", b"body,label\nx,positive\n",
                         "no column 'text' (it has: 'body', 'label')"),
    "parquet_without_text": ("cols.parquet", b"parquet:body", "no column 'text' (it has: 'body')"),
    "jsonl_without_text": ("keys.jsonl", b'{"body": "x"}\n{"title": "y"}\n',
                           "no row has the field(s) 'text' (fields seen: 'body', 'title')"),
    "csv_header_bad_encoding": ("hdr.csv", b"t\xffxt\nx\n", "unreadable header line: not valid utf-8"),
    "unknown_type": ("notes.txt", b"hello\n", "unsupported file type"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_file_problems_are_one_error_naming_the_file(case, tmp_path):
    name, content, message = FILE_CASES[case]
    path = tmp_path / name
    if content is None:
        path.mkdir()
    elif content == b"parquet:body":
        pq.write_table(pa.table({"body": ["x"]}), path)
    elif content != "absent":
        path.write_bytes(content)
    with pytest.raises(InputFileError) as err:
        check_file(str(path), ["text"])
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert isinstance(err.value, ValueError)
    if case == "missing":
        assert isinstance(err.value, FileNotFoundError)


def config(tmp_path, **corpus):
    return parse_config({"dataset": "d", "output_root": str(tmp_path / "out"),
                         "task": {"labels": LABELS}, "corpus": corpus})


def test_a_glob_that_matches_nothing_names_the_split_and_pattern(tmp_path):
    with pytest.raises(MissingInputError, match=r"corpus.seed: no input file matches '.*nothing\*.csv'"):
        check_input_files(config(tmp_path, unlabeled={"path": str(hc_file(tmp_path))},
                                 seed={"path": str(tmp_path / "nothing*.csv")}))


def hc_file(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text('{"text": "one row"}\n')
    return path


def test_a_seed_file_without_its_label_column_is_a_file_error(tmp_path):
    seed = tmp_path / "s.csv"
    seed.write_text("text,gold\nfine,positive\n")
    with pytest.raises(InputFileError, match=r"corpus.seed: .*s.csv: no column 'label' \(it has: 'text', 'gold'\)"):
        check_input_files(config(tmp_path, unlabeled={"path": str(hc_file(tmp_path))},
                                 seed={"path": str(seed)}))


def test_an_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "u.csv").write_text("text\n")          # a header, no rows
    (tmp_path / "s.jsonl").write_text("\n\n")          # blank lines only
    cfg = config(tmp_path, unlabeled={"path": str(tmp_path / "u.csv")},
                 seed={"path": str(tmp_path / "s.jsonl")})
    with pytest.raises(InputFileError, match="the corpus is empty: corpus.unlabeled .* and corpus.seed .* hold no rows"):
        check_input_files(cfg)


def test_rows_all_malformed_are_a_row_problem_not_a_file_problem(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{nope\n[1, 2]\n")
    assert check_file(str(path), ["text"]) == 2
    assert [r.reason for r in read(path)[1]] == ["malformed_record", "malformed_record"]


def test_compressed_text_formats_read_normally(tmp_path):
    (tmp_path / "x.csv.bz2").write_bytes(bz2.compress(b"text\r\nfirst\r\nsecond\r\n"))
    records, _ = read(tmp_path / "x.csv.bz2")
    assert [(r.text, r.input_ref.rsplit(":", 1)[1]) for r in records] == [("first", "2"), ("second", "3")]
    (tmp_path / "x.tsv").write_text("label\ttext\npositive\ta, b\n")
    assert [r.text for r in read(tmp_path / "x.tsv")[0]] == ["a, b"]


def test_the_cli_stops_before_any_model_loads(tmp_path, monkeypatch, capsys):
    """A file problem (here: an empty corpus, then a directory) exits 2 with one message naming
    the file, before the teacher is resolved, with no staging folder."""
    import potstill.beam_pipelines.pipeline
    from potstill.beam_pipelines.cli import main

    def no_models(*_):
        raise AssertionError("a model was resolved before the input files were checked")

    monkeypatch.setattr(potstill.beam_pipelines.pipeline, "resolve_model", no_models)
    (tmp_path / "u.jsonl").write_text("\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"dataset": "d", "output_root": "out", "task": {"labels": LABELS},
                               "corpus": {"unlabeled": {"path": "u.jsonl"}},
                               "teacher": {"model": "/no/such/teacher"}}))
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "the corpus is empty: corpus.unlabeled" in err and "u.jsonl" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "dir").mkdir()
    assert main(["run", str(cfg), "--set", f"corpus.unlabeled.path={tmp_path / 'dir'}"]) == 2
    err = capsys.readouterr().err
    assert f"corpus.unlabeled: {tmp_path / 'dir'}: is a directory" in err
    assert not (tmp_path / "out").exists()


# -- CSV quoting: a broken quote never merges rows (the rule: potstill/rows/readers.py) ------

def csv_file(tmp_path, lines, name="q.csv"):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def line_of(item) -> int:
    return int(item.input_ref.rsplit(":", 1)[1])


def spans(path):
    """(first, last) physical line of every CSV record, header and blank lines included."""
    from potstill.rows.readers import csv_records, decoded_lines

    with open(path, "rb") as fh:
        return [(first, last) for first, last, *_ in csv_records(decoded_lines(fh, "utf-8"), ",")]


def assert_lines_tile(path):
    """Every physical line belongs to exactly one record (or the header), in order."""
    got = spans(path)
    total = len(path.read_bytes().splitlines())
    assert [n for first, last in got for n in range(first, last + 1)] == list(range(1, total + 1))


def test_an_unterminated_quote_rejects_its_line_and_reads_on(tmp_path):
    lines = ["text,site"] + [f"review number {n},web" for n in range(2, 103)]
    lines[5] = '"an unterminated quote on line 6,web'
    path = csv_file(tmp_path, lines)
    records, rejected = read(path)
    assert len(lines) == 102 and (len(records), len(rejected)) == (100, 1)
    bad = rejected[0]
    assert line_of(bad) == 6 and bad.reason == "malformed_record" and bad.raw == lines[5]
    assert "line 6" in bad.detail and "never closes" in bad.detail and "line 7" in bad.detail
    assert [line_of(r) for r in records] == [n for n in range(2, 103) if n != 6]
    assert all(r.text == f"review number {line_of(r)}" for r in records)
    assert_lines_tile(path)


def test_a_runaway_quote_that_breaks_later_rejects_only_its_first_line(tmp_path):
    lines = ["text,label", '"opens and never closes,positive', "plain row,negative",
             'a row with "inner" quotes,positive', "last row,negative"]
    path = csv_file(tmp_path, lines)
    records, rejected = read(path, label_field="label", labels=LABELS, source="seed")
    assert [line_of(r) for r in rejected] == [2] and rejected[0].raw == lines[1]
    assert "quoted field opened on line 2" in rejected[0].detail and "line 4" in rejected[0].detail
    assert [(line_of(r), r.text) for r in records] == [
        (3, "plain row"), (4, 'a row with "inner" quotes'), (5, "last row")]
    assert_lines_tile(path)


def test_text_after_a_closing_quote_is_rejected_not_dropped(tmp_path):
    path = csv_file(tmp_path, ["text", '"quoted" and then more', "fine"])
    records, rejected = read(path)
    assert [r.text for r in records] == ["fine"]
    assert line_of(rejected[0]) == 2 and rejected[0].raw == '"quoted" and then more'
    assert "',' expected after '\"'" in rejected[0].detail


def test_a_quoted_field_over_several_lines_is_one_record(tmp_path):
    lines = ["text,label", '"first paragraph, with a comma', "", "second, also with one",
             'third",positive', "next,negative"]
    path = csv_file(tmp_path, lines)
    records, rejected = read(path, label_field="label", labels=LABELS, source="seed")
    assert not rejected and [(line_of(r), r.gold_label) for r in records] == [(2, "positive"),
                                                                             (6, "negative")]
    assert records[0].text == "first paragraph, with a comma second, also with one third"
    assert spans(path) == [(1, 1), (2, 5), (6, 6)]


def test_a_multiline_record_wider_than_the_header_is_a_broken_quote(tmp_path):
    lines = ["label,text", 'positive,"opens here', "negative,plain", 'negative,ends here",extra']
    path = csv_file(tmp_path, lines)
    records, rejected = read(path, label_field="label", labels=LABELS, source="seed")
    assert [(line_of(r), r.text) for r in records] == [(3, "plain")]
    assert [line_of(r) for r in rejected] == [2, 4] and rejected[0].raw == lines[1]
    assert "3 cells, the header 2" in rejected[0].detail
    assert_lines_tile(path)


def test_a_quoted_field_may_span_a_bounded_number_of_lines(tmp_path, monkeypatch):
    from potstill.rows import readers

    monkeypatch.setattr(readers, "MAX_RECORD_LINES", 5)
    ok = csv_file(tmp_path, ["text", '"one', "two", "three", "four", 'five"'], "ok.csv")
    assert [r.text for r in read(ok)[0]] == ["one two three four five"]
    long = csv_file(tmp_path, ["text", '"one', "two", "three", "four", "five", 'six"', "seven"],
                    "long.csv")
    records, rejected = read(long)
    assert [line_of(r) for r in rejected] == [2] and "still open after 5 lines" in rejected[0].detail
    assert [line_of(r) for r in records] == [3, 4, 5, 6, 7, 8]
    assert_lines_tile(long)


def test_a_header_with_a_broken_quote_stops_the_job_naming_file_and_line(tmp_path):
    path = csv_file(tmp_path, ['"text,label', "a,positive"])
    with pytest.raises(InputFileError) as err:
        check_file(str(path), ["text"])
    assert str(err.value).startswith(str(path)) and "line 1" in str(err.value)
