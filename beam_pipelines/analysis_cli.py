"""The `potstill` commands for people who consume versions rather than build them.

    potstill versions DATASET [--root R] [--format table|csv|json|parquet] [--out PATH]
    potstill diff DATASET@vA DATASET@vB [--root R] [--format table|json] [--out PATH] [LIMITS]
    potstill query DATASET[@vN] "SQL" | --file F.sql [--param NAME=VALUE ...] [--root R]
                   [--format table|csv|json|parquet] [--out PATH] [LIMITS]
    potstill label-issues DATASET[@vN] [--all] [--root R] [--format ...] [--out PATH] [LIMITS]
    potstill report DATASET[@vN] --out FILE [--student DIR ...] [--root R]
    potstill export DATASET[@vN] --to hf DIR [--push REPO] [--public] [--no-audit-rows] [--root R]

LIMITS bound DuckDB's work (potstill.reports.analysis.Limits): --memory-limit SIZE (default
$POTSTILL_QUERY_MEMORY_LIMIT, else 1GB), --timeout SECONDS per query (default
$POTSTILL_QUERY_TIMEOUT, else 60; 0 = none), --threads N (default: every core); a query past a
limit stops with exit 2 and a message naming the flag to raise.
R defaults to $POTSTILL_OUTPUT_ROOT, else ./potstill-datasets; a version argument with a slash is the
path of a version folder. Results go to stdout (an aligned table by default) or, with --out,
to that file, whose path is then printed; --out (and export's DIR) may not be inside the
output root or a published version. The logic lives in potstill.reports.analysis and
potstill.reports.report; this module only parses arguments and prints.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import duckdb
import pyarrow as pa

from potstill.reports import analysis, tables
from potstill.publish import export, versions

COMMANDS = ("versions", "diff", "query", "label-issues", "report", "export")
VERSION_HELP = ("a published version: DATASET@vN, DATASET for its latest, or the path of a "
                "version folder")


def add_commands(sub) -> None:
    """Register the analysis subcommands on the main parser's subparsers."""
    def common(p, formats=tables.FORMATS):
        p.add_argument("--root", default=None,
                       help="output root (default: $POTSTILL_OUTPUT_ROOT or ./potstill-datasets)")
        if formats:
            p.add_argument("--format", choices=formats, default="table",
                           help="how the result is written (default: an aligned table)")
        p.add_argument("--out", default=None, help="write the result to this file")

    def limits(p):
        p.add_argument("--memory-limit", default=None, metavar="SIZE",
                       help=f"most memory DuckDB and the result may use, e.g. 512MB, 4GB (default: "
                            f"${analysis.MEMORY_ENV} or {analysis.DEFAULT_MEMORY_LIMIT})")
        p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                       help=f"stop a query after this long (default: ${analysis.TIMEOUT_ENV} or "
                            f"{analysis.DEFAULT_TIMEOUT_S:g}; 0 = no limit)")
        p.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: every core)")

    p = sub.add_parser("versions", help="list a dataset's published versions")
    p.add_argument("dataset", help="the dataset's name (a folder under the output root)")
    common(p)

    p = sub.add_parser("diff", help="rows, labels and config that changed between two versions")
    p.add_argument("a", metavar="DATASET@vA", help="the older version (as for query)")
    p.add_argument("b", metavar="DATASET@vB", help="the newer version")
    common(p, ("table", "json"))
    limits(p)

    p = sub.add_parser("query", help="run DuckDB SQL over a version's data, filtered, rejected "
                                     "and manifest views")
    p.add_argument("version", metavar="DATASET[@vN]", help=VERSION_HELP)
    p.add_argument("sql", nargs="?", help="the query (or use --file)")
    p.add_argument("--file", help="a .sql file, or the name of one under sql/analysis/")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="bind $NAME (VALUE read as JSON when it parses); repeatable")
    common(p)
    limits(p)

    p = sub.add_parser("label-issues", help="cleanlab's label issues among the seed rows")
    p.add_argument("version", metavar="DATASET[@vN]", help=VERSION_HELP)
    p.add_argument("--all", action="store_true", help="every seed row, with its score and flag")
    common(p)
    limits(p)

    p = sub.add_parser("report", help="write a version's report.html (with student metrics)")
    p.add_argument("version", metavar="DATASET[@vN]", help=VERSION_HELP)
    p.add_argument("--student", action="append", default=[], metavar="DIR",
                   help="a trained student folder (its metrics.json); repeatable")
    common(p, formats=())

    p = sub.add_parser("export", help="copy a version as a Hugging Face dataset repo "
                                      "(card + data), and optionally push it")
    p.add_argument("version", metavar="DATASET[@vN]", help=VERSION_HELP)
    p.add_argument("--to", choices=export.FORMATS, required=True, help="the target format")
    p.add_argument("dir", metavar="DIR", help="a new or empty folder")
    p.add_argument("--push", metavar="REPO", default=None,
                   help=f"then upload DIR to this Hub dataset repo (token from ${export.TOKEN_ENV})")
    p.add_argument("--public", action="store_true", help="with --push: create the repo public")
    p.add_argument("--no-audit-rows", action="store_true",
                   help="leave rejected.parquet and filtered.parquet out (rejected rows keep their "
                        "raw input); the card then says they stay with the published version")
    p.add_argument("--root", default=None,
                   help="output root (default: $POTSTILL_OUTPUT_ROOT or ./potstill-datasets)")


def _value(v):
    return json.dumps(v, sort_keys=True, default=str)


def format_diff(d: dict, examples: int = 10) -> str:
    a, b, rows = d["a"]["ref"], d["b"]["ref"], d["rows"]
    out = [f"{a} -> {b}",
           f"rows: {d['a']['rows']} -> {d['b']['rows']} (added {rows['added']}, removed "
           f"{rows['removed']}, relabelled {rows['relabelled']}, unchanged {rows['unchanged']})", "",
           "label distribution"]
    out.append(tables.format_table(pa.Table.from_pylist(
        [{"label": r["label"], a: r["a"], b: r["b"], "delta": r["delta"], f"share {a}": r["share_a"],
          f"share {b}": r["share_b"]} for r in d["labels"]])))
    relabelled = d["ids"]["relabelled"]
    if relabelled:
        out.append(f"relabelled (first {min(examples, len(relabelled))} of {len(relabelled)})")
        out.append(tables.format_table(pa.Table.from_pylist(relabelled[:examples])))
    changes = d["config"]
    out.append(f"config: {len(changes)} change{'s' if len(changes) != 1 else ''}")
    if changes:
        out.append(tables.format_table(pa.Table.from_pylist(
            [{"key": c["key"], "old": "(absent)" if c["change"] == "added" else _value(c["old"]),
              "new": "(absent)" if c["change"] == "removed" else _value(c["new"])}
             for c in changes]), max_width=80))
    return "\n".join(out).rstrip("\n") + "\n"


def _emit(text: str, out: str | None) -> None:
    if out is None:
        print(text, end="")
        return
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(out)


def check_out(root: str, refs: list[str], out: str, flag: str = "--out") -> None:
    """Refuse (exit 2) a result path inside the output root, which holds the datasets and the
    teacher store only (a stray file there named like a version or a dataset blocks the next
    run), inside the dataset folder of a version given by its path, or inside any published
    version (`analysis.check_output_path`)."""
    analysis.check_output_path(out)  # the most specific refusal first: inside a version
    target = Path(out).expanduser().resolve()
    places = [(Path(root).expanduser().resolve(), "the output root")]
    places += [(Path(r).expanduser().resolve().parent, "the dataset folder")
               for r in refs if "/" in r or os.sep in r]
    for folder, what in places:
        if target == folder or folder in target.parents:
            raise analysis.AnalysisError(
                f"refused: {flag} {out} is inside {what} {folder}, which holds datasets, their "
                "versions and the teacher store only (a file there can block the next version); "
                "write the result elsewhere")


def _export(root: str, args) -> None:
    check_out(root, [args.version], args.dir, "DIR")
    analysis.check_output_path(f"{args.dir}/README.md")
    out = export.export_hf(analysis.locate(root, args.version), args.dir,
                           audit_rows=not args.no_audit_rows)
    if args.push:
        print(f"pushing {out} to {args.push}", file=sys.stderr)
        print(export.push(out, args.push, private=not args.public), file=sys.stderr)
    print(out)


def _run(args) -> None:
    root = args.root if args.root is not None else analysis.default_root()
    if args.command == "export":
        return _export(root, args)
    if args.out is not None:
        refs = [args.a, args.b] if args.command == "diff" else [getattr(args, "version", "")]
        check_out(root, refs, args.out)
    if getattr(args, "format", None) == "parquet" and args.out is None:
        raise analysis.AnalysisError("--format parquet needs --out FILE")
    limits = None
    if args.command in ("diff", "query", "label-issues"):
        limits = analysis.Limits.resolve(args.memory_limit, args.timeout, args.threads,
                                         text_output=args.format != "parquet")
    if args.command == "versions":
        table = analysis.versions_table(root, args.dataset)
        if table.num_rows == 0:
            versions.resolve_version(root, args.dataset)  # raises: names the datasets there
    elif args.command == "diff":
        d = analysis.diff(analysis.locate(root, args.a), analysis.locate(root, args.b), limits)
        _emit(format_diff(d) if args.format == "table"
              else json.dumps(d, indent=2, default=str) + "\n", args.out)
        return
    elif args.command == "query":
        if (args.sql is None) == (args.file is None):
            raise analysis.AnalysisError("give either a SQL string or --file, not both or neither")
        sql = analysis.load_sql(args.file)[1] if args.file else args.sql
        table = analysis.run_query(analysis.locate(root, args.version), sql,
                                   analysis.parse_params(args.param), limits)
    elif args.command == "label-issues":
        table = analysis.label_issues(analysis.locate(root, args.version), all_rows=args.all,
                                      limits=limits)
    else:  # report
        from potstill.reports.report import write_report

        if args.out is None:
            raise analysis.AnalysisError("potstill report needs --out FILE (versions are read-only)")
        print(write_report(analysis.locate(root, args.version), args.out, args.student))
        return
    if args.out is not None:
        tables.write(table, args.format, args.out)
        print(args.out)
    else:
        print(tables.write(table, args.format), end="")


def run(args) -> int:
    """Run one analysis command; a user error prints one line and returns 2."""
    try:
        _run(args)
        return 0
    except (analysis.AnalysisError, versions.VersionError, export.ExportError, duckdb.Error,
            OSError) as err:
        msg = str(err).strip().replace("\n", "\n  ")
        print(f"potstill {args.command}: error: {msg}", file=sys.stderr)
        return 2
