"""report.html: written inside every version at publish time, self-contained, and rendered by a
real headless Chromium (screenshot not blank, plots in the DOM, no console errors)."""
import json
import os
import re
import shutil
import stat
import subprocess

import pyarrow as pa
import pytest

import analysis_fixture as fx
from potstill.publish import contract, versions
from potstill.reports import plots, report

PLOTS = ("funnel", "label-distribution", "confidence-histogram", "reliability")
METRICS = {"accuracy": 0.81, "macro_f1": 0.8, "ece": 0.05, "n": 20, "train_on": "all",
           "per_class_recall": {"negative": 0.8, "positive": 0.82}, "train_rows": 11,
           "epochs": 3, "seconds": 1.5, "train_loss": [0.7, 0.5, 0.42]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("versions")
    return fx.build(root, render=report.write_version_report)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    d = tmp_path_factory.mktemp("student")
    (d / "metrics.json").write_text(json.dumps(METRICS))
    return d


def test_publish_writes_report_and_validation_docs_inside_the_version(built):
    v1, _ = built
    for name in (report.REPORT, report.VALIDATION_JSON, report.VALIDATION_HTML):
        assert stat.S_IMODE(os.stat(v1 / name).st_mode) == 0o444  # part of the immutable version
    page = (v1 / report.REPORT).read_text()
    assert "<h1>demo@v1</h1>" in page and "validation passed" in page
    for name in PLOTS:
        assert f'data-plot="{name}"' in page
    assert 'class="section-error"' not in page
    for title in ("Selection funnel", "Labels before and after curation", "Teacher confidence",
                  "Teacher audit", "Candidate label errors", "Great-expectations gate", "Lineage"):
        assert f"<h2>{title}" in page
    assert 'href="manifest.json"' in page and 'href="validation.html"' in page
    assert "No student metrics in this report" in page


def test_report_is_self_contained(built):
    page = (built[0] / report.REPORT).read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page)


def test_validation_docs(built):
    v1, _ = built
    doc = json.loads((v1 / report.VALIDATION_JSON).read_text())
    assert doc["suite"] == report.SUITE and doc["version"] == "v1" and doc["success"] is True
    assert doc["statistics"] == {"evaluated_expectations": 2, "successful_expectations": 2,
                                 "unsuccessful_expectations": 0}
    page = (v1 / report.VALIDATION_HTML).read_text()
    assert "expect_column_values_to_be_unique" in page and 'href="validation.json"' in page


def test_failing_render_publishes_nothing(tmp_path):
    def broken(folder):
        assert (folder / "manifest.json").is_file() and (folder / "data").is_dir()
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError, match="render failed"):
        versions.publish(tmp_path, "demo", published=fx.published(fx.CORPUS_V1),
                         filtered=fx.filtered(), rejected=fx.rejected(), manifest={}, render=broken)
    assert list((tmp_path / "demo").iterdir()) == []


def test_corpus_text_is_escaped(tmp_path):
    rows = fx.published(fx.CORPUS_V1).to_pylist()
    for r in rows:
        if r["id"] == "s3":  # the cleanlab issue: its text is shown in the report
            r["text"] = "<script>alert('x')</script> & more"
    version = versions.publish(
        tmp_path, "demo", published=pa.Table.from_pylist(rows, schema=contract.PUBLISHED_SCHEMA),
        filtered=fx.filtered(), rejected=fx.rejected(),
        manifest=fx.manifest(fx.CONFIG_V1, "c" * 64, fx.published(fx.CORPUS_V1)),
        render=report.write_version_report)
    page = (version / report.REPORT).read_text()
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page


def test_report_with_student_metrics(built, student, tmp_path):
    out = report.write_report(built[0], tmp_path / "r" / "report.html", [student])
    page = out.read_text()
    assert 'data-plot="loss"' in page and "train_on=all" in page and "0.81" in page
    assert (tmp_path / "r" / report.VALIDATION_HTML).is_file()
    assert re.search(r'href="[./]*[^"]*demo/v1/manifest.json"', page)


def test_a_failing_section_is_shown_in_place(built, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise ValueError("no funnel today")

    monkeypatch.setattr(plots, "funnel", boom)
    page = report.write_report(built[0], tmp_path / "report.html").read_text()
    assert 'class="section-error">funnel failed: no funnel today' in page
    assert 'data-plot="reliability"' in page  # the other sections still render


def test_report_without_seed_rows(tmp_path):
    pub = pa.Table.from_pylist([fx.row(i, t, c) for i, t, c in fx.CORPUS_V1],
                               schema=contract.PUBLISHED_SCHEMA)
    version = versions.publish(tmp_path, "noseed", published=pub, filtered=fx.filtered(),
                               rejected=fx.rejected(), manifest={"labels": fx.LABELS},
                               render=report.write_version_report)
    page = (version / report.REPORT).read_text()
    assert "No seed rows" in page and 'class="section-error"' not in page


# -- headless Chromium ------------------------------------------------------------------------

def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed in CI: run `make browser`")
        pytest.skip("chromium not installed (`make browser`); this test never skips in CI")
    return path


def run_chromium(tmp_path, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True,
                          timeout=120)


def test_report_renders_in_headless_chromium(built, student, tmp_path):
    page = report.write_report(built[0], tmp_path / "report.html", [student])
    url = page.resolve().as_uri()

    dom = run_chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    svgs = re.findall(r'<svg[^>]*data-plot="([a-z-]+)"', dom.stdout)
    assert sorted(svgs) == sorted(PLOTS + ("loss",))
    assert dom.stdout.count("<section>") == len(report.SECTIONS)
    for log in (dom.stderr,):
        assert "Uncaught" not in log and "ERROR:CONSOLE" not in log, log[-2000:]
        assert not re.search(r"CONSOLE.*(error|Failed to load)", log, re.I), log[-2000:]

    shot = tmp_path / "report.png"
    result = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", url)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert "Uncaught" not in result.stderr and "ERROR:CONSOLE" not in result.stderr
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    colours = image.getcolors(maxcolors=1 << 22)
    assert len(colours) > 50, "screenshot looks blank"
    counts = {c: n for n, c in colours}
    bg = max(counts.values())
    assert bg < 0.9 * image.size[0] * image.size[1], "one colour fills the page"

    def near(hex_colour, tol=12):
        r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        return sum(n for (cr, cg, cb), n in counts.items()
                   if abs(cr - r) <= tol and abs(cg - g) <= tol and abs(cb - b) <= tol)

    # the plots' bar colours are on screen, not just in the markup
    assert near(plots.COLORS["published"]) > 2000 and near(plots.COLORS["scored"]) > 2000


def test_first_section_compares_student_gold_only_and_teacher_in_chromium(built, student, tmp_path):
    gold = tmp_path / "gold-only"
    gold.mkdir()
    (gold / "metrics.json").write_text(json.dumps({
        **METRICS, "accuracy": 0.7, "macro_f1": 0.69, "train_on": "seed",
        "per_class_recall": {"negative": 0.6, "positive": 0.8}}))
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps({"model": "teacher", "accuracy": 0.9, "macro_f1": 0.88, "n": 20,
                                   "per_class_recall": {"negative": 0.85, "positive": 0.95}}))
    page = report.write_report(built[0], tmp_path / "report.html", [teacher, gold, student])
    dom = run_chromium(tmp_path, "--dump-dom", page.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html_ = dom.stdout
    first = html_.index("What distillation bought")
    assert first < html_.index("data-plot=\"funnel\"")  # before everything but the title
    table_html = html_[html_.index('<div id="comparison">'):html_.index('id="teacher-cost"')]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", table_html)
    rows = [cells[i:i + len(cells) // 3] for i in range(0, len(cells), len(cells) // 3)]
    assert [r[0] for r in rows] == ["distilled student", "gold-only student", "teacher"]
    for row, (acc, f1, delta) in zip(rows, [("0.81", "0.8", "+0.1100"), ("0.7", "0.69", "+0.0000"),
                                            ("0.9", "0.88", "+0.2000")]):
        assert acc in row and f1 in row and delta in row, row
    assert "0.95" in rows[2] and "0.6" in rows[1]
    assert "calls" in html_[html_.index('id="teacher-cost"'):][:400]


def test_a_student_brings_its_gold_only_baseline_and_the_report_names_what_is_missing(built, tmp_path):
    """A student folder whose metrics.json lists a baseline (`train` writes OUT/gold-only/) shows
    it beside the student without --student naming it; what the comparison still lacks is said."""
    out = tmp_path / "student"
    (out / "gold-only").mkdir(parents=True)
    (out / "gold-only" / "metrics.json").write_text(json.dumps({**METRICS, "accuracy": 0.7,
                                                                "train_on": "seed"}))
    (out / "metrics.json").write_text(json.dumps({**METRICS, "baselines": {"gold-only": {
        "path": "gold-only", "accuracy": 0.7}}}))
    page = report.write_report(built[0], tmp_path / "report.html", [out]).read_text()
    table_html = page[page.index('<div id="comparison">'):page.index('id="teacher-cost"')]
    assert "gold-only student" in table_html and "+0.1100" in table_html
    missing = page[page.index('id="comparison-missing"'):page.index('id="teacher-cost"')]
    assert "the teacher on the test split" in missing and "gold-only" not in missing
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps({"model": "teacher", "accuracy": 0.9, "macro_f1": 0.88, "n": 20}))
    both = report.write_report(built[0], tmp_path / "r2.html", [out, teacher]).read_text()
    assert 'id="comparison-missing"' not in both
    # named twice (bundled and with --student), it is shown once
    once = report.write_report(built[0], tmp_path / "r3.html", [out / "gold-only", out]).read_text()
    assert once.count("gold-only student") == 1


def test_a_label_the_font_cannot_draw_leaves_stderr_clean():
    """An emoji label is drawn as a box in the SVG; matplotlib's missing-glyph warning must not
    reach the user's stderr (the tables carry the label's text)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svg = plots.label_distribution(["Fresh \U0001F345", "Rotten"], [5, 3], [4, 3])
    assert svg.startswith("<svg") and 'data-plot="' in svg
