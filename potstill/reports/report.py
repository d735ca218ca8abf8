"""report.html: one self-contained page per dataset version (no network, no JavaScript).

What it shows, top to bottom: the version's identity and validation status; what distillation
bought: the distilled student vs the gold-only student vs the teacher on the test split
(accuracy, macro-F1, per-class recall, from each one's metrics.json) with the teacher's calls
and time (manifest teacher_usage, throughput); the selection
funnel read -> rejected -> filtered -> published split by source/reason, with the reasons
table (sql/analysis/rejected_reasons.sql); label distribution before curation (every row the
teacher scored) and after (published); the teacher-confidence histogram (published vs
curated-out, with the min_confidence threshold) and per-class quantiles; the teacher audit on
the gold seed rows (manifest["teacher_audit"], reliability diagram from calibration.sql,
confusion matrix, disagreement per gold label); cleanlab's label issues on the seed rows;
the great-expectations results; student metrics when a student was trained; lineage (inputs,
models, curation query and parameters, full config).

Where reports are written:
- every published version: `versions.publish(..., render=write_version_report)` (called by
  job.finish) writes report.html, validation.json and validation.html into the version
  before it becomes visible, so a version never exists without its report;
- `potstill train --out DIR` writes DIR/report.html: the version's report plus the student's
  metrics (the version itself is immutable, so a later student never changes it);
- `potstill report DATASET[@vN] --out FILE [--student DIR ...]` writes one anywhere.
validation.json (manifest["validation"] with dataset, version and suite name) and
validation.html (a GE-style data docs page: one row per expectation) go beside report.html.

Plots are inline SVG (potstill/reports/plots.py). A section that fails to render shows its error in
place (class "section-error") instead of failing the publish: a report bug must not throw
away a finished run.
"""
from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import duckdb

from potstill.reports import analysis, plots, tables
from potstill.publish import card, versions

log = logging.getLogger(__name__)

REPORT = "report.html"
VALIDATION_JSON = "validation.json"
VALIDATION_HTML = "validation.html"
SUITE = "potstill_published"
ISSUES_SHOWN = 20

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#212529;
 background:#f1f3f5;margin:0}
main{max-width:1080px;margin:0 auto;padding:20px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 10px}h3{font-size:15px;margin:14px 0 6px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:14px 0;box-shadow:0 1px 3px #0002}
.meta{color:#495057}.meta code{background:#f1f3f5;padding:1px 4px;border-radius:3px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-top:12px}
.card{flex:1;min-width:130px;padding:10px 14px;border-radius:6px;background:#e7f5ff}
.card b{display:block;font-size:22px}.card.rejected{background:#ffe3e3}
.card.filtered{background:#fff3bf}.card.published{background:#d3f9d8}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;color:#fff}
.pass{background:#2b8a3e}.fail{background:#e03131}.unknown{background:#868e96}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid #dee2e6;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f8f9fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.plot{max-width:100%;height:auto;display:block;margin:6px 0}
.row{display:flex;gap:20px;flex-wrap:wrap;align-items:flex-start}
.note{color:#495057;font-size:13px}.section-error{color:#c92a2a;background:#fff5f5;padding:8px}
pre{background:#f8f9fa;padding:10px;overflow:auto;font-size:12px;max-height:420px}
"""


@dataclass
class Context:
    vdir: Path
    manifest: dict
    con: duckdb.DuckDBPyConnection
    links: dict[str, str]
    students: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels") or [])

    def rows(self, sql: str, **params: Any) -> list[dict]:
        return analysis.execute(self.con, sql, params).to_pylist()

    def file(self, name: str, **params: Any) -> list[dict]:
        return analysis.execute(self.con, analysis.load_sql(name)[1], params).to_pylist()


# -- html helpers ----------------------------------------------------------------------------

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(rows: Sequence[dict], columns: Sequence[str] | None = None, max_width: int = 80) -> str:
    if not rows:
        return '<p class="note">(no rows)</p>'
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(f'<td{" class=num" if num else ""}>{esc(tables.cell(v, max_width))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def badge(success: bool | None) -> str:
    cls, text = {True: ("pass", "passed"), False: ("fail", "failed")}.get(success, ("unknown", "unknown"))
    return f'<span class="badge {cls}">validation {text}</span>'


# -- sections ----------------------------------------------------------------------------------

def _header(ctx: Context) -> str:
    m, links = ctx.manifest, ctx.links
    teacher = (m.get("models") or {}).get("teacher") or {}
    totals = (m.get("counts") or {}).get("totals") or {}
    cards = "".join(f'<div class="card {k}">{k}<b>{esc(totals.get(k, "?"))}</b></div>'
                    for k in ("read", "rejected", "filtered", "published"))
    link = " · ".join(f'<a href="{esc(href)}">{esc(name)}</a>' for name, href in (
        ("manifest.json", links.get("manifest")), ("validation data docs", links.get("validation_html")),
        ("validation.json", links.get("validation_json"))) if href)
    return (f"<h1>{esc(m.get('dataset'))}@{esc(m.get('version'))}</h1>"
            f'<p class="meta">created <code>{esc(m.get("created_at"))}</code> · parent '
            f'<code>{esc(m.get("parent_version") or "none")}</code> · config '
            f'<code>{esc((m.get("config_digest") or "")[:12])}</code> · code '
            f'<code>{esc(m.get("code_version"))}</code> · teacher <code>{esc(teacher.get("name"))}</code>'
            f' · {badge((m.get("validation") or {}).get("success"))}</p>'
            f'<p class="meta">{link}</p><div class="cards">{cards}</div>')


def _funnel(ctx: Context) -> str:
    def by(sql):
        return [(k, n) for k, n in ctx.con.sql(sql).fetchall()]
    stages = [
        ("read", by("select source, count(*) from (select source from data union all select "
                    "source from filtered union all select source from rejected) group by 1 order by 1")),
        ("rejected", by("select reason, count(*) from rejected group by 1 order by 2 desc, 1")),
        ("filtered", by("select filter_reason, count(*) from filtered group by 1 order by 2 desc, 1")),
        ("published", by("select source, count(*) from data group by 1 order by 1")),
    ]
    return ("<h2>Selection funnel</h2>" + plots.funnel(stages)
            + "<h3>Why rows were dropped</h3>" + table(ctx.file("rejected_reasons")))


def _labels(ctx: Context) -> str:
    rows = ctx.rows("""
        select label, count(*) as scored, count(*) filter (where stage = 'published') as published
        from (select label, 'published' as stage from data union all
              select label, 'filtered' from filtered where teacher_label is not null)
        group by label""")
    order = {l: i for i, l in enumerate(ctx.labels)}
    rows.sort(key=lambda r: (order.get(r["label"], len(order)), r["label"]))
    svg = plots.label_distribution([r["label"] for r in rows], [r["scored"] for r in rows],
                                   [r["published"] for r in rows])
    return ("<h2>Labels before and after curation</h2>"
            '<p class="note">scored = every row the teacher labelled (gold label on seed rows); '
            "published = the rows that passed curation.</p>" + svg + table(rows))


def _confidence(ctx: Context) -> str:
    # numpy columns, not a Python float per row
    published = ctx.con.sql("select teacher_confidence from data").fetchnumpy()["teacher_confidence"]
    filtered = ctx.con.sql("select teacher_confidence from filtered "
                           "where teacher_confidence is not null").fetchnumpy()["teacher_confidence"]
    m = ctx.manifest
    threshold = ((m.get("curation") or {}).get("params") or {}).get("min_confidence")
    if threshold is None:
        threshold = ((m.get("config") or {}).get("curation") or {}).get("min_confidence")
    return ("<h2>Teacher confidence</h2>" + plots.confidence_histogram(published, filtered, threshold)
            + "<h3>Per teacher label (published rows)</h3>" + table(ctx.file("confidence_by_class")))


def _confusion(rows: list[dict], labels: list[str]) -> str:
    cells = {(r["gold_label"], r["teacher_label"]): r for r in rows}
    head = "".join(f"<th>teacher: {esc(l)}</th>" for l in labels)
    body = ""
    for g in labels:
        tds = ""
        for t in labels:
            r = cells.get((g, t), {"n": 0, "share_of_gold": None})
            alpha = 0.85 * (r["share_of_gold"] or 0)
            tds += (f'<td class="num" style="background:rgba(28,126,214,{alpha:.2f})">{r["n"]}</td>')
        body += f"<tr><th>gold: {esc(g)}</th>{tds}</tr>"
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _labelled_by(manifest: dict) -> str:
    note = card.fallback_note(manifest)
    return (f'<p class="note"><b>{html.escape(card.FALLBACK_HEADLINE)}</b> {html.escape(note)}</p>'
            if note else "")


def _teacher(ctx: Context) -> str:
    # The audit's shape grows with the teacher's options: its top-level scalars go in one
    # row, anything nested as dotted key/value rows beside the throughput.
    flat = analysis.flatten(ctx.manifest.get("teacher_audit") or {})
    top = {k: v for k, v in flat.items() if "." not in k and k}
    nested = [{"key": k, "value": v} for k, v in flat.items() if "." in k]
    out = "<h2>Teacher audit (gold seed rows)</h2>" + _labelled_by(ctx.manifest)
    out += table([top]) if top else ""
    out += '<div class="row">'
    if nested:
        out += f"<div><h3>Audit details</h3>{table(nested)}</div>"
    throughput = ctx.manifest.get("throughput")
    if throughput:
        out += "<div><h3>Throughput</h3>" + table(
            [{"key": k, "value": v} for k, v in analysis.flatten(throughput).items()]) + "</div>"
    out += "</div>"
    buckets = ctx.file("calibration")
    if not any(b["n"] for b in buckets):
        return out + '<p class="note">No seed rows: calibration and confusion need gold labels.</p>'
    out += '<div class="row"><div>' + plots.reliability(buckets, buckets[0]["ece"]) + "</div><div>"
    out += "<h3>Confusion matrix</h3>" + _confusion(ctx.file("confusion_matrix"), ctx.labels)
    out += "<h3>Disagreement by gold label</h3>" + table(ctx.file("teacher_gold_disagreement"))
    return out + "</div></div><h3>Calibration table</h3>" + table(buckets)


def _issues(ctx: Context) -> str:
    issues = analysis.label_issues(ctx.vdir).to_pylist()
    return ("<h2>Candidate label errors (cleanlab)</h2>"
            '<p class="note">cleanlab <code>find_label_issues</code> on the seed rows: gold labels '
            "vs the teacher's label_probs, which are out-of-sample because the teacher never "
            f"trains on seed rows. {len(issues)} flagged"
            + (f", the {ISSUES_SHOWN} most suspect shown" if len(issues) > ISSUES_SHOWN else "")
            + ". More: <code>potstill label-issues</code>, "
            "<code>sql/analysis/label_error_candidates.sql</code>.</p>"
            + table(issues[:ISSUES_SHOWN]))


def _validation(ctx: Context) -> str:
    v = ctx.manifest.get("validation") or {}
    results = v.get("results") or []
    ok = sum(1 for r in results if r.get("success"))
    return (f"<h2>Great-expectations gate</h2><p>{badge(v.get('success'))} {ok} of {len(results)} "
            f'expectations met · <a href="{esc(ctx.links.get("validation_html"))}">data docs</a></p>'
            + table(results, ["expectation", "column", "success", "unexpected_count",
                              "observed_value", "kwargs"]))


def _kind(m: dict) -> str:
    if m.get("model") == "teacher":
        return "teacher"
    return "gold-only student" if m.get("train_on") == "seed" else "distilled student"


def _bought(ctx: Context) -> str:
    """First: what distillation bought. The distilled student vs the gold-only student vs the
    teacher on the same held-out test rows, and what the teacher cost."""
    m = ctx.manifest
    usage, tp = m.get("teacher_usage") or {}, m.get("throughput") or {}
    audit = m.get("teacher_audit") or {}
    cost = (f"Teacher: {esc(usage.get('calls', tp.get('teacher_rows', '?')))} calls "
            f"({esc(usage.get('cache_hits', 0))} answers reused from the store), "
            f"{esc(tp.get('teacher_seconds', '?'))} s of scoring at "
            f"{esc(tp.get('teacher_rows_per_second', '?'))} rows/s; audit accuracy on "
            f"{esc(audit.get('n', 0))} gold seed rows: {esc(audit.get('accuracy', 'n/a'))}.")
    head = "<h2>What distillation bought (held-out test split)</h2>"
    if not ctx.students:
        return head + f'<p class="note">No test metrics in this report: <code>potstill report ' \
               f'... --student DIR --student GOLD_ONLY_DIR --student TEACHER.json</code> adds ' \
               f'them (<code>potstill evaluate CONFIG --model teacher --out TEACHER.json</code>).' \
               f'</p><p id="teacher-cost">{cost}</p>'
    order = {"distilled student": 0, "gold-only student": 1, "teacher": 2}
    ranked = sorted(ctx.students, key=lambda s: order[_kind(s[1])])
    gold = next((mm for _, mm in ranked if _kind(mm) == "gold-only student"), None)
    rows = []
    for name, mm in ranked:
        row = {"model": _kind(mm), "source": name, "accuracy": mm.get("accuracy"),
               "macro_f1": mm.get("macro_f1"), "n": mm.get("n")}
        if gold is not None and isinstance(mm.get("accuracy"), (int, float)):
            row["vs gold-only"] = f"{mm['accuracy'] - gold['accuracy']:+.4f}"
        for label in ctx.labels:
            row[f"recall {label}"] = (mm.get("per_class_recall") or {}).get(label)
        rows.append(row)
    missing = [what for kind, what in (
        ("gold-only student", "the gold-only student (<code>potstill train ... --train-on seed</code>)"),
        ("teacher", "the teacher on the test split (<code>potstill evaluate CONFIG --model teacher "
                    "--out TEACHER.json</code>, then <code>--compare teacher=TEACHER.json</code>)"))
        if kind not in {_kind(mm) for _, mm in ranked}]
    note = (f'<p class="note" id="comparison-missing">Not in this comparison: {"; ".join(missing)}.</p>'
            if missing else "")
    return (head + '<div id="comparison">' + table(rows) + f'</div>{note}'
            f'<p id="teacher-cost">{cost}</p>')


def _students(ctx: Context) -> str:
    if not ctx.students:
        return ("<h2>Student</h2><p class=\"note\">No student metrics in this report. "
                "<code>potstill train --out DIR</code> writes DIR/report.html with them; "
                "<code>potstill report ... --student DIR</code> adds them to any report.</p>")
    rows = [{"student": name, **{k: m.get(k) for k in ("accuracy", "macro_f1", "ece", "n", "train_on",
                                                        "train_rows", "epochs", "seconds")},
             "per_class_recall": m.get("per_class_recall")} for name, m in ctx.students]
    curves = [(name, m["train_loss"]) for name, m in ctx.students if m.get("train_loss")]
    return ("<h2>Student (held-out test split)</h2>" + table(rows)
            + (plots.loss_curves(curves) if curves else ""))


def _lineage(ctx: Context) -> str:
    m = ctx.manifest
    inputs = [{"split": split, "path": f.get("path"), "sha256": (f.get("sha256") or "")[:16],
               "bytes": f.get("bytes")} for split, files in (m.get("inputs") or {}).items() for f in files]
    models = [{"role": role, **info} for role, info in (m.get("models") or {}).items()]
    curation = m.get("curation") or {}
    return ("<h2>Lineage</h2>" + f'<p class="meta">fingerprint <code>{esc(m.get("fingerprint"))}</code></p>'
            + "<h3>Inputs</h3>" + table(inputs) + "<h3>Models</h3>" + table(models)
            + f"<h3>Curation</h3><p>query <code>{esc(curation.get('query'))}</code>, parameters "
            f"<code>{esc(json.dumps(curation.get('params'), sort_keys=True))}</code></p>"
            + f"<details><summary>config</summary><pre>{esc(json.dumps(m.get('config'), indent=2, sort_keys=True))}</pre></details>")


SECTIONS = (_header, _bought, _funnel, _labels, _confidence, _teacher, _issues, _validation, _students, _lineage)


def _safe(section, ctx: Context) -> str:
    try:
        return section(ctx)
    except Exception as err:  # noqa: BLE001 - one broken section must not lose the report
        log.warning("report section %s failed: %s", section.__name__, err, exc_info=True)
        return f'<div class="section-error">{esc(section.__name__[1:])} failed: {esc(err)}</div>'


# -- pages -------------------------------------------------------------------------------------

def load_student(path: str | os.PathLike) -> tuple[str, dict]:
    """(name, metrics) from a trained student's folder (its metrics.json) or the file itself."""
    p = Path(path)
    file = p / "metrics.json" if p.is_dir() else p
    metrics = json.loads(file.read_text(encoding="utf-8"))
    name = file.parent.name + (f" (train_on={metrics['train_on']})" if metrics.get("train_on") else "")
    return name, metrics


def render(version_dir: str | os.PathLike, students: Sequence[tuple[str, dict]] = (),
           links: dict[str, str] | None = None) -> str:
    vdir = Path(version_dir)
    manifest = versions.read_manifest(vdir)
    con = analysis.open_version(vdir, load=False)  # our queries: read as they run, not loaded
    try:
        ctx = Context(vdir, manifest, con, links or {}, list(students))
        body = "".join(f"<section>{_safe(s, ctx)}</section>" for s in SECTIONS)
    finally:
        con.close()
    title = f"{manifest.get('dataset')}@{manifest.get('version')} · potstill report"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


def validation_docs(manifest: dict) -> tuple[str, str]:
    """(validation.json text, validation.html text) for a version's GE results."""
    v = manifest.get("validation") or {}
    results = v.get("results") or []
    doc = {"suite": SUITE, "dataset": manifest.get("dataset"), "version": manifest.get("version"),
           "success": v.get("success"), "statistics": {
               "evaluated_expectations": len(results),
               "successful_expectations": sum(1 for r in results if r.get("success")),
               "unsuccessful_expectations": sum(1 for r in results if not r.get("success"))},
           "results": results}
    rows = [{"status": "✔" if r.get("success") else "✘", **{k: r.get(k) for k in (
        "expectation", "column", "kwargs", "unexpected_count", "observed_value")}} for r in results]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Validation · '
            f"{esc(doc['dataset'])}@{esc(doc['version'])}</title><style>{CSS}</style></head><body><main>"
            f"<section><h1>Expectation suite <code>{SUITE}</code></h1><p>{esc(doc['dataset'])}@"
            f"{esc(doc['version'])} · {badge(doc['success'])} · <a href=\"{VALIDATION_JSON}\">"
            f"{VALIDATION_JSON}</a></p>{table([doc['statistics']])}</section>"
            f"<section><h2>Expectations</h2>{table(rows, max_width=200)}</section></main></body></html>\n")
    return json.dumps(doc, indent=2, sort_keys=True) + "\n", page


def write_report(version_dir: str | os.PathLike, out: str | os.PathLike,
                 students: Sequence[str | os.PathLike] = ()) -> Path:
    """Write `out` (report.html) and validation.json / validation.html beside it."""
    vdir, out = Path(version_dir), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = versions.read_manifest(vdir)
    doc_json, doc_html = validation_docs(manifest)
    (out.parent / VALIDATION_JSON).write_text(doc_json, encoding="utf-8")
    (out.parent / VALIDATION_HTML).write_text(doc_html, encoding="utf-8")
    links = {"manifest": os.path.relpath(vdir / versions.MANIFEST, out.parent),
             "validation_html": VALIDATION_HTML, "validation_json": VALIDATION_JSON}
    out.write_text(render(vdir, with_baselines(students), links), encoding="utf-8")
    return out


def with_baselines(students: Sequence[str | os.PathLike]) -> list[tuple[str, dict]]:
    """Each student's (name, metrics), followed by the baselines trained beside it (its
    metrics.json `baselines`, e.g. OUT/gold-only/) that are not already in the list."""
    seen = {Path(s).resolve() for s in students}
    out = []
    for s in students:
        out.append(load_student(s))
        folder = Path(s) if Path(s).is_dir() else Path(s).parent
        for base in (out[-1][1].get("baselines") or {}).values():
            path = folder / str(base.get("path", ""))
            if "accuracy" in base and (path / "metrics.json").is_file() and path.resolve() not in seen:
                seen.add(path.resolve())
                out.append(load_student(path))
    return out


def write_version_report(version_dir: str | os.PathLike) -> Path:
    """The publish hook: the report and validation docs inside the (not yet visible) version."""
    return write_report(version_dir, Path(version_dir) / REPORT)
