"""The `potstill` command line (also `python -m potstill`).

    potstill run CONFIG.yaml [--set key.path=value ...] [--max-teacher-calls N] [-- BEAM_ARGS]
    potstill train [--dataset VERSION_DIR] --config CONFIG.yaml --out DIR [--train-on all|seed]
    potstill evaluate CONFIG.yaml --model teacher|DIR [--out FILE] [--predictions FILE]
    potstill plan CONFIG.yaml [--set ...] [--sample N] [--out FILE]
    potstill gc DATASET [--root R] [--dry-run] [--grace-hours H]
    potstill init LABELLED_FILE [--unlabeled FILE] [--out DIR] [--test-size N|FRACTION] [--seed-size N] ...
    potstill versions | diff | query | label-issues | report ...   (see analysis_cli.py)

Options may come before or after the command and its arguments (`potstill query DS --root R
"SQL"`, `potstill run CONFIG -v`). Each command logs progress to stderr, whole lines in the log's
format with no third-party progress bars (potstill.progress.configure_logging), and prints its
result as the last stdout line: the version directory for `run`, a JSON object for `train` and
`evaluate`. Exit codes: 0 success;
2 a problem the user can fix (bad config, input or model files: a ValueError or OSError naming
it), one message, no traceback; 3 the validation suite failed (nothing published); 1 a bug in
potstill: the traceback, and a line that says so. `init`, `plan`, `run`, `train` and `evaluate`
are a thin layer over the Python API (beam_pipelines/api.py: `potstill.plan`, `potstill.run`, ...).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback

from potstill.beam_pipelines import analysis_cli, api
from potstill.config.core import ConfigError, load_config
from potstill.progress import configure_logging, log_line

log = logging.getLogger("potstill")
CONFIG_HELP = "the job's YAML config"
SET_HELP = ("override one config key before validation, the value read as YAML, e.g. "
            "--set curation.min_confidence=0.8; repeatable")
VERBOSE = ("-v", "--verbose")
RUN_EPILOG = """Beam pipeline options go after `--`, unchanged, e.g.
  potstill run job.yaml -- --direct_num_workers=2 --direct_running_mode=multi_processing
  potstill run job.yaml -- --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
(docs/runners.md)."""


class _AnyOrder(argparse.ArgumentParser):
    """A command's parser that takes its positionals and options in any order, with -v anywhere.
    argparse alone gives an optional positional (`query`'s SQL, nargs="?") nothing when an option
    comes between it and the one before, then refuses the SQL as an unrecognized argument;
    `parse_known_intermixed_args` reads the options first, then the positionals."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(*VERBOSE, action="store_true", default=argparse.SUPPRESS,
                          help="debug logging, and the traceback of any error (before or after "
                               "the command)")

    def parse_known_args(self, args=None, namespace=None):
        if getattr(self, "_intermixing", False):  # the two passes of the intermixed parse
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _global_options(argv: list[str]) -> tuple[bool, list[str]]:
    """(verbose, argv without -v/--verbose): read before any parser, since logging is set up
    first, wherever they stand before a `--` (after it, they are Beam's)."""
    end = argv.index("--") if "--" in argv else len(argv)
    return (any(a in VERBOSE for a in argv[:end]),
            [a for a in argv[:end] if a not in VERBOSE] + argv[end:])


def _split_beam_args(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def run(argv: list[str] | None = None, test_pipeline=None) -> str:
    """`potstill run`: the testable entry point (Beam's examples' `run(argv, test_pipeline)`)."""
    ours, beam_args = _split_beam_args(list(sys.argv[1:] if argv is None else argv))
    args = run_parser().parse_args(ours)
    cfg = load_config(args.config, args.set)
    return str(api.run(cfg, beam_args=beam_args, max_teacher_calls=args.max_teacher_calls,
                       test_pipeline=test_pipeline).version)


def run_parser() -> argparse.ArgumentParser:
    """`potstill run`'s own parser (main hands it everything before `--`)."""
    parser = _AnyOrder(prog="potstill run", epilog=RUN_EPILOG,
                       description="Run the batch job and publish a dataset version.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help=CONFIG_HELP)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help=SET_HELP)
    parser.add_argument("--max-teacher-calls", type=int, default=None, metavar="N",
                        help="refuse to start when the plan needs more teacher calls than N")
    return parser


def _plan(args) -> dict:
    from pathlib import Path

    cfg = load_config(args.config, args.set)
    p = api.plan(cfg, sample=args.sample)
    print(log_line(str(p), "potstill.plan"), file=sys.stderr)
    out = args.out or Path(cfg.output_root) / cfg.dataset / f"plan-{p.fingerprint[:12]}.json"
    log.info("plan written to %s", p.write(out))
    return p.details


def _train(args) -> dict:
    """With --dataset, OUT/report.html is the version's report with this student's metrics
    (and those of --compare) added."""
    cfg = load_config(args.config, args.set)
    return api.train(cfg, dataset=args.dataset, out=args.out, train_on=args.train_on,
                     compare=args.compare).metrics


def _evaluate(args) -> dict:
    cfg = load_config(args.config, args.set)  # --out: e.g. the teacher's, for `train --compare`
    return api.evaluate(cfg, model=args.model, out=args.out, predictions=args.predictions).metrics


def _init(args) -> dict:
    """`potstill init`: the splits and the config; the next commands go to the log."""
    result = api.init(args.labelled, out=args.out, unlabeled=args.unlabeled,
                      test_size=args.test_size, seed_size=args.seed_size,
                      text_column=args.text_column, label_column=args.label_column,
                      random_seed=args.random_seed)
    rows = result.rows
    log.info("wrote %s: %d seed, %d test%s rows; next: potstill plan %s, then potstill run %s",
             result.config.parent, rows["seed"], rows["test"],
             f", {rows['unlabeled']} unlabeled" if "unlabeled" in rows else "",
             result.config, result.config)
    return result.to_dict()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="potstill", description=__doc__.split("\n\n")[0])
    parser.add_argument(*VERBOSE, action="store_true",
                        help="debug logging, and the traceback of any error (before or after the command)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_AnyOrder, metavar="COMMAND",
                                help="one of these; `potstill COMMAND --help` lists its options")
    sub.add_parser("run", help="run the batch job and publish a dataset version (options of Beam "
                   "after `--`)", add_help=False)

    train = sub.add_parser("train", help="fine-tune the student on a published version (or, with "
                           "--train-on seed, on the config's gold rows alone)")
    train.add_argument("--dataset", default=None, help="a published version directory (not needed "
                       "with --train-on seed: the gold-only student reads the config's seed rows)")
    train.add_argument("--config", required=True, help=CONFIG_HELP)
    train.add_argument("--out", required=True, help="where the model and metrics.json go")
    train.add_argument("--train-on", choices=["all", "seed"], default="all",
                       help="all: the version's rows; seed: the config's gold rows alone (the "
                            "gold-only baseline)")
    train.add_argument("--compare", action="append", default=[], metavar="NAME=PATH",
                       help="metrics.json (or its folder) shown beside this student in its model "
                            "card and report, e.g. gold-only=runs/rt/gold-only; repeatable")
    train.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help=SET_HELP)

    pl = sub.add_parser("plan", help="what a run will read, send to the teacher and cost, "
                                     "without calling the teacher on the pool")
    pl.add_argument("config", help=CONFIG_HELP)
    pl.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help=SET_HELP)
    pl.add_argument("--sample", type=int, default=None, metavar="N",
                    help="rows to time on the teacher for the estimate (default 2 batches; 0 = none)")
    pl.add_argument("--out", default=None, help="the JSON file (default OUTPUT_ROOT/DATASET/plan-*.json)")

    ev = sub.add_parser("evaluate", help="evaluate the teacher or a trained student on the test split")
    ev.add_argument("config", help=CONFIG_HELP)
    ev.add_argument("--model", required=True, help="'teacher' or a trained student directory")
    ev.add_argument("--out", default=None, help="also write the metrics JSON to this file")
    ev.add_argument("--predictions", default=None, metavar="FILE.jsonl",
                    help="a student: write each test row's predicted label and probabilities "
                         "(probs in task.labels order, and probs_by_label named)")
    ev.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help=SET_HELP)

    it = sub.add_parser("init", help="a job from one labelled file: stratified seed and test "
                                     "splits and a commented config, ready for plan and run")
    it.add_argument("labelled", metavar="LABELLED_FILE", help="Parquet, JSONL or CSV with a text "
                    "and a label column")
    it.add_argument("--unlabeled", default=None, metavar="FILE", help="your unlabeled texts (the "
                    "same text column); default: the labelled rows in neither split, labels dropped")
    it.add_argument("--out", default=None, metavar="DIR", help="where the splits and config.yaml "
                    "go (default jobs/NAME, NAME from the file's name); files there are never overwritten")
    it.add_argument("--test-size", default="0.2", metavar="N|FRACTION",
                    help="test rows: a number (e.g. 200) or a fraction of the rows (default 0.2)")
    it.add_argument("--seed-size", type=int, default=None, metavar="N",
                    help="gold seed rows (default 32, at least 4 per label)")
    it.add_argument("--text-column", default="text", metavar="COLUMN", help="the text column (default text)")
    it.add_argument("--label-column", default="label", metavar="COLUMN", help="the label column (default label)")
    it.add_argument("--random-seed", type=int, default=0, metavar="S",
                    help="which rows go where; the same inputs and S give byte-identical files")
    gc = sub.add_parser("gc", help="remove a dataset's leftovers of dead runs, and teacher-store "
                                   "entries no published version needs")
    gc.add_argument("dataset", help="the dataset's name (a folder under the output root)")
    gc.add_argument("--root", default=None, help="output root (default: $POTSTILL_OUTPUT_ROOT or ./potstill-datasets)")
    gc.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    gc.add_argument("--grace-hours", type=float, default=1.0,
                    help="also keep store segments younger than this (runs in progress hold a "
                         "lease: while one is live, no store entry is removed)")
    analysis_cli.add_commands(sub)
    return parser


def _gc(args) -> dict:
    """`potstill gc`: the dataset's leftovers under its lock (no run of it is in progress), then
    the teacher store, which `store.collect` leaves alone while any run under the root holds a
    live lease. A dry run reports exactly what the real one removes (`leftovers_removed` and
    `store` alike) and removes nothing."""
    from potstill.reports import analysis
    from potstill import store
    from potstill.publish import versions

    if not args.grace_hours >= 0:  # NaN too
        raise ValueError(f"--grace-hours must be a number of hours >= 0, got {args.grace_hours}")
    root = args.root if args.root is not None else analysis.default_root()
    versions.existing_dataset(root, args.dataset)  # a mistyped name creates nothing
    with versions.dataset_lock(root, args.dataset):
        leftovers = versions.remove_leftovers(root, args.dataset, dry_run=args.dry_run)
        report = store.collect(root, dry_run=args.dry_run, grace_s=args.grace_hours * 3600)
    return {"dry_run": args.dry_run, "leftovers_removed": leftovers, "store": report}


def main(argv: list[str] | None = None) -> int:
    verbose, argv = _global_options(list(sys.argv[1:] if argv is None else argv))
    configure_logging(verbose, models=bool(argv) and argv[0] not in (*analysis_cli.COMMANDS, "gc", "init"))
    try:
        if argv[:1] == ["run"]:
            print(run(argv[1:]))
            return 0
        args = _parser().parse_args(argv)
        if args.command in analysis_cli.COMMANDS:
            return analysis_cli.run(args)
        commands = {"train": _train, "evaluate": _evaluate, "gc": _gc, "plan": _plan, "init": _init}
        result = commands[args.command](args)
        print(json.dumps(result, sort_keys=True))
        return 0
    except (ConfigError, ValueError, OSError) as err:  # FileNotFoundError is an OSError
        if verbose:
            raise
        print(f"potstill: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a failed suite is named; anything else is a bug
        from potstill.publish.expectations import ValidationFailed

        if isinstance(err, ValidationFailed):
            print(f"potstill: validation failed, nothing was published:\n{err}", file=sys.stderr)
            return 3
        traceback.print_exc()
        print("potstill: this is a bug in potstill (the traceback above says where); "
              "please report it with the command you ran", file=sys.stderr)
        return 1
