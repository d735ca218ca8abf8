"""Options anywhere on the command line, and help for every argument of every command."""
import argparse

import pytest

import analysis_fixture as fx
from potstill.beam_pipelines import cli
from potstill.beam_pipelines.cli import main
from potstill.config.core import ConfigError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    fx.build(root)
    return str(root)


def test_global_options_are_read_before_or_after_the_command_but_not_after_the_beam_separator():
    assert cli._global_options(["-v", "run", "c.yaml"]) == (True, ["run", "c.yaml"])
    assert cli._global_options(["run", "c.yaml", "--verbose", "--", "-v"]) == (True, ["run", "c.yaml", "--", "-v"])
    assert cli._global_options(["run", "c.yaml", "--", "-v"]) == (False, ["run", "c.yaml", "--", "-v"])


@pytest.mark.parametrize("argv", [["-v", "plan", "nope.yaml"], ["plan", "-v", "nope.yaml"],
                                  ["plan", "nope.yaml", "--verbose"], ["run", "nope.yaml", "-v"]])
def test_verbose_anywhere_shows_the_error_s_traceback(argv, capsys):
    """-v re-raises a user error (its traceback) instead of the one-line message and exit 2."""
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        main(argv)
    assert main([a for a in argv if a not in ("-v", "--verbose")]) == 2
    assert "potstill: error: config file not found: nope.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("order", [
    ["query", "demo@v1", "SQL", "--root", "ROOT"],
    ["query", "demo@v1", "--root", "ROOT", "SQL"],
    ["query", "--root", "ROOT", "demo@v1", "SQL"],
    ["query", "--root", "ROOT", "demo@v1", "--format", "table", "SQL", "-v"],
    ["-v", "query", "demo@v1", "--threads", "1", "SQL", "--root", "ROOT"],
])
def test_query_takes_its_sql_and_options_in_any_order(order, root, capsys):
    sql = "select count(*) as n from data"
    argv = [root if a == "ROOT" else sql if a == "SQL" else a for a in order]
    assert main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines()[2].strip() == "10"


def test_a_second_sql_string_is_still_refused(root, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["query", "demo@v1", "select 1", "--root", root, "select 2"])
    assert exit_.value.code == 2 and "unrecognized arguments: select 2" in capsys.readouterr().err


def _parsers(parser: argparse.ArgumentParser, name: str = "potstill"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {command}")


def test_every_argument_of_every_command_has_help():
    parsers = [*_parsers(cli._parser()), ("potstill run", cli.run_parser())]
    assert {"potstill run", "potstill train", "potstill query", "potstill export"} <= {n for n, _ in parsers}
    missing = [f"{name}: {'/'.join(a.option_strings) or a.dest}" for name, p in parsers for a in p._actions
               if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    assert not missing, f"arguments without help: {missing}"


def test_run_help_shows_beam_pipeline_options_after_the_separator(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "Beam pipeline options go after `--`" in out
    assert "potstill run job.yaml -- --direct_num_workers=2" in out
    assert "the job's YAML config" in out and "KEY.PATH=VALUE" in out
