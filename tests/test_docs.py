"""Every Markdown file (README.md, docs/**/*.md) against the code it describes.

- Code fences are balanced: each opened fence is closed, and no fence opens inside another (an
  unclosed fence swallows the headings and tables after it).
- Every `potstill ...` (or `python -m potstill ...`) command in a code block parses with the
  CLI's own argument parser (`potstill run` with its own parser, Beam's arguments after `--`
  left to Beam). Nothing is run: placeholders such as DATASET or CONFIG.yaml are fine as values,
  an unknown flag is not.
- Relative links and their #anchors resolve; repository paths named in the text exist, and a
  `file.py:name` reference names a def or class in that file.
- A YAML block whose top-level keys are config sections validates as (part of) a config.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
IDS = [str(p.relative_to(ROOT)) for p in DOCS]

# Paths the text tells the reader to create (the quickstart's own config).
EXAMPLE_PATHS = {"configs/tickets.yaml"}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`]*)$")
PATH = re.compile(r"(?<![\w./$-])((?:potstill|models|transforms|beam_pipelines|sql|tests|benchmarks|configs|docs)"
                  r"/[\w./-]*\.(?:py|sql|yaml|md))(?::(\w+))?")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@dataclass
class Fence:
    start: int                      # 1-based line of the opening fence
    info: str                       # the info string, e.g. "sh"
    lines: list[tuple[int, str]] = field(default_factory=list)


def parse_fences(text: str) -> tuple[list[Fence], list[str]]:
    """The code blocks of a Markdown text, and the problems with its fences."""
    fences: list[Fence] = []
    problems: list[str] = []
    open_: tuple[str, int, Fence] | None = None
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if open_ is None:
            if m:
                fence = Fence(n, m.group(2).strip())
                open_ = (m.group(1)[0], len(m.group(1)), fence)
            continue
        char, length, fence = open_
        if m and m.group(1)[0] == char and len(m.group(1)) >= length and not m.group(2).strip():
            fences.append(fence)
            open_ = None
            continue
        if m and m.group(1)[0] == char and len(m.group(1)) >= length and m.group(2).strip():
            problems.append(f"line {n}: a fence opens ({line.strip()!r}) inside the fence of line "
                            f"{fence.start}, which is never closed before it")
        fence.lines.append((n, line))
    if open_ is not None:
        problems.append(f"line {open_[2].start}: the fence opened here is never closed")
    return fences, problems


def prose(text: str) -> str:
    """The text outside code fences (fence lines blanked, so line numbers stay)."""
    fences, _ = parse_fences(text)
    lines = text.split("\n")
    for fence in fences:
        for n in range(fence.start, fence.lines[-1][0] + 2 if fence.lines else fence.start + 1):
            lines[n - 1] = ""
    return "\n".join(lines)


def logical_lines(fence: Fence) -> list[tuple[int, str]]:
    """Shell lines with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for n, line in fence.lines:
        if pending is not None:
            n, line = pending[0], pending[1] + " " + line.strip()
        if line.rstrip().endswith("\\"):
            pending = (n, line.rstrip()[:-1])
            continue
        pending = None
        out.append((n, line))
    if pending is not None:
        out.append(pending)
    return out


def _is_python(word: str) -> bool:
    return re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", word) is not None


def potstill_argv(tokens: list[str]) -> list[str] | None:
    """The arguments after `potstill` / `python -m potstill` in one simple command, else None."""
    while tokens and re.fullmatch(r"[A-Za-z_]\w*=.*", tokens[0]):  # VAR=value before the command
        tokens = tokens[1:]
    if tokens[:1] == ["potstill"] or (tokens and tokens[0].endswith("/potstill")):
        return tokens[1:]
    if len(tokens) >= 3 and _is_python(tokens[0]) and tokens[1:3] == ["-m", "potstill"]:
        return tokens[3:]
    return None


def commands(text: str) -> tuple[list[tuple[int, list[str]]], list[str]]:
    """Every potstill command in the code blocks, as (line, argv), and lines that do not split."""
    found, problems = [], []
    fences, _ = parse_fences(text)
    for fence in fences:
        for n, line in logical_lines(fence):
            if "potstill" not in line:
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            try:
                tokens = list(lexer)
            except ValueError as err:
                if re.search(r"(^|[;&|]\s*)(\S*python3?\s+-m\s+)?potstill\s", line.strip()):
                    problems.append(f"line {n}: cannot split {line.strip()!r}: {err}")
                continue
            segment: list[str] = []
            for tok in tokens + [";"]:
                if tok and set(tok) <= set(";&|"):
                    argv = potstill_argv(segment) if segment else None
                    if argv is not None:
                        found.append((n, argv))
                    segment = []
                else:
                    segment.append(tok)
    return found, problems


class _Parsed(Exception):
    """Raised in place of loading the config: `potstill run`'s arguments parsed."""


def check_command(argv: list[str]) -> str | None:
    """None when the CLI's parser accepts `potstill ARGV`, else its error message."""
    from potstill.beam_pipelines import cli

    argv = list(argv)
    if argv[:1] in (["-v"], ["--verbose"]):
        argv = argv[1:]
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            if argv[:1] == ["run"]:
                with mock.patch.object(cli, "load_config", side_effect=_Parsed):
                    cli.run(argv[1:])
            else:
                cli._parser().parse_args(argv)
    except _Parsed:
        return None
    except SystemExit as exit_:
        if exit_.code in (0, None):  # --help
            return None
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exit_.code}"
    return None


def command_problems(text: str) -> list[str]:
    found, problems = commands(text)
    for n, argv in found:
        error = check_command(argv)
        if error:
            problems.append(f"line {n}: potstill {shlex.join(argv)}\n    {error}")
    return problems


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", prose(text), re.M)}


def link_problems(path: Path) -> list[str]:
    text = path.read_text()
    problems = []
    for m in LINK.finditer(prose(text)):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"link to {target}: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            problems.append(f"link to {target}: no heading #{anchor} in {dest.name}")
    return problems


def path_problems(text: str) -> list[str]:
    problems = []
    for m in PATH.finditer(text):
        rel, name = m.group(1).rstrip("."), m.group(2)
        if rel in EXAMPLE_PATHS:
            continue
        target = ROOT / rel
        if not target.exists():
            problems.append(f"{rel} does not exist")
        elif name and target.suffix == ".py" and not re.search(
                rf"^\s*(async\s+def|def|class)\s+{name}\b", target.read_text(), re.M):
            problems.append(f"{rel}:{name}: no def or class {name} there")
    return problems


MINIMAL_CONFIG = {"dataset": "docs-example", "task": {"labels": ["a", "b"]},
                  "corpus": {"unlabeled": {"path": "unlabeled.jsonl"}}}


def yaml_problems(text: str) -> list[str]:
    from potstill.config.core import Config, ConfigError, parse_config

    problems = []
    fences, _ = parse_fences(text)
    for fence in fences:
        if fence.info not in ("yaml", "yml"):
            continue
        raw = yaml.safe_load("\n".join(line for _, line in fence.lines))
        if not isinstance(raw, dict) or not set(raw) <= set(Config.model_fields):
            continue
        try:
            parse_config({**MINIMAL_CONFIG, **raw})
        except ConfigError as err:
            problems.append(f"line {fence.start}: {err}")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_code_fences_are_balanced(path):
    _, problems = parse_fences(path.read_text())
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_potstill_commands_parse(path):
    problems = command_problems(path.read_text()) + commands(path.read_text())[1]
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_links_resolve(path):
    problems = link_problems(path)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_repository_paths_exist(path):
    problems = path_problems(path.read_text())
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_yaml_config_examples_validate(path):
    problems = yaml_problems(path.read_text())
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_the_docs_hold_commands_of_every_kind():
    """The extraction finds what is there (a checker that finds nothing passes everything)."""
    seen = {argv[0] for path in DOCS for _, argv in commands(path.read_text())[0] if argv}
    assert {"run", "plan", "train", "evaluate", "versions", "diff", "query", "label-issues",
            "report", "export", "gc"} <= seen
    readme = {argv[0] for _, argv in commands((ROOT / "README.md").read_text())[0]}
    assert {"run", "plan", "train", "evaluate"} <= readme


# The checkers themselves, on small texts.

def test_checker_rejects_an_unknown_flag():
    text = "```sh\npotstill train --dataset D --config C --out O --bogus 1\n```\n"
    problems = command_problems(text)
    assert len(problems) == 1 and "--bogus" in problems[0]


def test_checker_rejects_an_unknown_flag_of_run_but_leaves_beam_args_to_beam():
    bad = "```sh\npotstill run cfg.yaml --sett a=b\n```\n"
    assert "--sett" in command_problems(bad)[0]
    good = ("```sh\npotstill run cfg.yaml --set a.b=1 --max-teacher-calls 10 -- \\\n"
            "    --runner=DaskRunner --dask_client_address=tcp://HOST:8786\n```\n")
    assert command_problems(good) == []


def test_checker_reads_python_m_chains_comments_and_env_vars():
    text = ("```sh\nX=1 python -m potstill plan cfg.yaml --sample 0   # a comment --bogus\n"
            "make install && .venv/bin/python -m potstill query DS \"select 1\" --nope\n```\n")
    found, _ = commands(text)
    assert [argv[0] for _, argv in found] == ["plan", "query"]
    problems = command_problems(text)
    assert len(problems) == 1 and "--nope" in problems[0] and problems[0].startswith("line 3:")


def test_checker_finds_an_unclosed_fence():
    _, problems = parse_fences("```sh\nls\n\n## A heading\n\n```sh\nls\n```\n")
    assert any("inside the fence of line 1" in p for p in problems)
    _, problems = parse_fences("text\n~~~\ncode\n")
    assert problems == ["line 2: the fence opened here is never closed"]
    assert parse_fences("````md\n```sh\nls\n```\n````\n")[1] == []


def test_checker_finds_broken_links_paths_and_configs(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n\n[ok](#title) [bad](#nowhere) [gone](missing.md)\n")
    problems = link_problems(doc)
    assert len(problems) == 2 and "#nowhere" in problems[0] and "missing.md" in problems[1]
    assert path_problems("see `models/no_such_module.py` and `potstill/store.py:no_such_function`") == [
        "models/no_such_module.py does not exist",
        "potstill/store.py:no_such_function: no def or class no_such_function there"]
    assert "unknown key" in yaml_problems("```yaml\nteacher: {batch_sise: 8}\n```\n")[0]
