"""`potstill init LABELLED_FILE`: a job ready for `potstill plan` and `potstill run`, from one
labelled file.

The file (Parquet, JSONL or CSV, read by potstill.rows like every corpus file) is checked as a
whole first: a missing text or label column is an error naming the file and the columns it has.
Every row is then validated as the job validates a gold row; a row that cannot be used (no
text, no label, a broken line) goes to `rejected.jsonl` with its reason and `file:line`, and a
later copy of a text already read (the same content id the job deduplicates by) goes there as
`duplicate`, so one text never lands in two splits. The labels are the distinct values of the
label column, sorted.

The unique rows are split, stratified by label, into the test rows (kept apart, for
evaluation), the gold seed rows and the rest. Each class gets at least one row in the test
split and one in the seed split (a class with fewer than two rows is an error naming it), the
other rows of a split go to the classes in proportion to their remaining rows (largest
remainder, ties in label order). Which rows of a class go where is decided by the SHA-256 of
`random_seed` and the row's content id, so the split is the same for the same rows in any file
order, and the files written are byte-identical for the same inputs. Without an unlabeled file
the rest, labels dropped, is the unlabeled pool the teacher labels; with one, the rest is left
unused (and counted).

Written to the output folder: `seed.jsonl`, `test.jsonl`, `unlabeled.jsonl` (without
`--unlabeled`), `rejected.jsonl` (when a row was set aside) and `config.yaml`, whose comments
say where each split came from and what to edit next. Files already there are never
overwritten. Relative paths in the config are read from its folder, as in every config;
`output_root` points at `./potstill-datasets` of the folder `init` ran in.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from potstill.rows.records import (Bounds, InputFileError, Record, Rejection, check_file,
                                   expand, iter_rows, validate)

CONFIG = "config.yaml"
SPLITS = ("seed", "test", "unlabeled")
REJECTED = "rejected.jsonl"
DEFAULT_TEST_SIZE = 0.2
MIN_SEED_PER_CLASS = 4       # the default seed size gives each class about this many gold rows
DEFAULT_SEED_ROWS = 32


class StarterError(ValueError):
    """A labelled file `init` cannot split, or an option it cannot honour: names the file,
    column, class or option."""


@dataclass(frozen=True)
class Starter:
    """What `init` wrote: the config, each split's file and row count, the labels."""
    config: Path
    labels: list[str]
    rows: dict[str, int]           # seed, test, unlabeled, unused, rejected
    files: dict[str, Path] = field(default_factory=dict)


def dataset_name(path: str) -> str:
    """A dataset name (config `dataset`) from a file name: tickets.csv.gz -> tickets."""
    name = Path(path).name
    for suffix in (".gz", ".bz2"):
        name = name.removesuffix(suffix)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).stem).lstrip("._-")[:128]
    return name or "dataset"


def parse_size(value: str | int | float, option: str) -> int | float:
    """`--test-size`: a whole number of rows (>= 1) or a fraction strictly between 0 and 1."""
    if isinstance(value, bool):
        raise StarterError(f"{option} must be a number of rows or a fraction, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value) if value.strip().lstrip("+").isdigit() else float(value)
        except ValueError:
            raise StarterError(f"{option} must be a number of rows (e.g. 200) or a fraction "
                               f"(e.g. 0.2), got {value!r}") from None
    if isinstance(value, float) and value.is_integer() and value >= 1:
        value = int(value)
    if isinstance(value, int) and value >= 1:
        return value
    if isinstance(value, float) and 0 < value < 1:
        return value
    raise StarterError(f"{option} must be a number of rows >= 1 or a fraction between 0 and 1, "
                       f"got {value!r}")


def read_labelled(path: str, text_column: str, label_column: str
                  ) -> tuple[list[tuple[Record, Any]], list[Rejection], list[str]]:
    """(unique usable rows with their text as read, set-aside rows, labels) of one file."""
    import fsspec

    check_file(path, [text_column, label_column])  # names the file and the columns it has
    raw_rows = []
    with fsspec.open(path, "rb") as fh:
        for line, raw in iter_rows(fh, path):
            raw_rows.append((f"{path}:{line}", raw))
    found = set()
    for _, raw in raw_rows:
        value = raw.get(label_column) if isinstance(raw, dict) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            found.add(str(value).strip())
    labels = sorted(found)
    kept: dict[str, tuple[Record, Any]] = {}
    rejected: list[Rejection] = []
    for ref, raw in raw_rows:
        out = validate(raw, source="labelled", input_ref=ref, text_field=text_column,
                       label_field=label_column, labels=labels, bounds=Bounds())  # the job's defaults
        if isinstance(out, Rejection):
            rejected.append(out)
        elif out.id in kept:
            first = kept[out.id][0]
            note = "" if first.gold_label == out.gold_label else \
                f" (labelled {first.gold_label!r} there, {out.gold_label!r} here)"
            as_read = getattr(raw, "raw", None) or json.dumps(raw, ensure_ascii=False, default=str)
            rejected.append(Rejection("labelled", ref, "duplicate",
                                      f"the same text as {first.input_ref}{note}", as_read))
        else:
            kept[out.id] = (out, raw[text_column])
    return list(kept.values()), rejected, labels


def allocate(k: int, counts: dict[str, int], what: str) -> dict[str, int]:
    """`k` rows over the classes: one each, the rest in proportion to each class's rows beyond
    that one (largest remainder, ties in label order); never more than a class has."""
    if k < len(counts):
        raise StarterError(f"{what} is {k} rows, fewer than the {len(counts)} labels: a stratified "
                           "split needs at least one row of each label")
    spare = {label: n - 1 for label, n in counts.items()}
    total, rest = sum(spare.values()), k - len(counts)
    if rest > total:
        raise StarterError(f"{what} is {k} rows, but only {total + len(counts)} rows are left for it")
    share = {label: rest * n / total if total else 0.0 for label, n in spare.items()}
    out = {label: int(s) for label, s in share.items()}
    order = sorted(counts, key=lambda label: (-(share[label] - out[label]), label))
    for label in order[:rest - sum(out.values())]:
        out[label] += 1
    return {label: 1 + n for label, n in out.items()}


def split(rows: list[Record], test_size: int | float, seed_size: int | None, random_seed: int,
          pool: bool, where: str = "the file") -> dict[str, list[Record]]:
    """{test, seed, rest} stratified by gold label (see the module docstring). `pool`: the
    rest becomes the unlabeled pool, so it may not be empty; `where` names file and column."""
    by_label: dict[str, list[Record]] = {}
    for r in rows:
        by_label.setdefault(r.gold_label, []).append(r)
    small = sorted(label for label, group in by_label.items() if len(group) < 2)
    if small:
        names = ", ".join(map(repr, small[:10])) + (f", ... ({len(small)} labels)" if len(small) > 10 else "")
        hint = " (is it the label column? --label-column names it)" if 2 * len(small) > len(by_label) else ""
        raise StarterError(f"{where}: label(s) {names} have only one usable row: a stratified split "
                           "needs at least two of each (one gold seed row, one test row); add rows "
                           f"or remove that label{hint}")
    n, classes = len(rows), len(by_label)
    n_test = test_size if isinstance(test_size, int) else max(classes, round(test_size * n))
    n_seed = seed_size if seed_size is not None else \
        min(max(DEFAULT_SEED_ROWS, MIN_SEED_PER_CLASS * classes), n - n_test - int(pool))
    if n_test + n_seed + int(pool) > n:
        raise StarterError(f"{n} usable rows cannot hold {n_test} test rows and {n_seed} seed rows"
                           + (" and leave an unlabeled pool: lower --test-size or --seed-size, or "
                              "give your unlabeled texts with --unlabeled FILE" if pool else
                              ": lower --test-size or --seed-size"))

    def order(r: Record) -> str:
        return hashlib.sha256(f"{random_seed}\0{r.id}".encode()).hexdigest()
    for group in by_label.values():
        group.sort(key=order)
    counts = {label: len(group) for label, group in sorted(by_label.items())}
    test = allocate(n_test, counts, "the test split")
    seed = allocate(n_seed, {label: counts[label] - test[label] for label in counts}, "the seed split")
    out: dict[str, list[Record]] = {"test": [], "seed": [], "rest": []}
    for label, group in sorted(by_label.items()):
        out["test"] += group[:test[label]]
        out["seed"] += group[test[label]:test[label] + seed[label]]
        out["rest"] += group[test[label] + seed[label]:]
    return out


def _line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def _relative(target: str, folder: Path) -> str:
    """`target` as written in a config in `folder`: relative where it can be (a local path)."""
    if "://" in target:
        return target
    return Path(os.path.relpath(Path(target).resolve(), folder.resolve())).as_posix()


def yaml_value(value: str | list[str]) -> str:
    """`value` as a YAML flow scalar (or list of them) that reads back exactly: a JSON string
    where YAML reads it as written (any label stays legible: "Fresh 🍅", not "\\ud83c\\udf45",
    which YAML reads as two lone surrogates), else YAML's own escaped double-quoted form."""
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    text = json.dumps(value, ensure_ascii=False)
    try:  # YAML breaks lines (a comment's too) at NEL and the Unicode line/paragraph separators
        if yaml.safe_load(text) == value and not set(text) & {"\x85", "\u2028", "\u2029"}:
            return text
    except yaml.YAMLError:
        pass
    return yaml.safe_dump(value, default_style='"', width=float("inf")).rstrip("\n")


def config_text(*, dataset: str, labels: list[str], source: str, label_column: str,
                rows: dict[str, int], unlabeled: str, unlabeled_text: str, pooled: bool,
                output_root: str, random_seed: int) -> str:
    """The commented config.yaml."""
    q = yaml_value  # any label, name or path reads back as it is
    n = rows["seed"] + rows["test"] + rows["unlabeled" if pooled else "unused"]
    if pooled:
        pool_note = (f"  # the pool the teacher labels: the {rows['unlabeled']:,} rows of {source} in neither\n"
                     "  # split below (labels dropped). Next: replace it with your own unlabeled texts\n"
                     "  # (Parquet, JSONL or CSV; set text_field to their text column).\n")
    else:
        pool_note = ("  # the pool the teacher labels"
                     + (f"; {rows['unused']:,} labelled rows of {source} are in\n  # neither split "
                        "below (raise --seed-size to use them as gold rows)\n" if rows["unused"] else "\n"))
    rejected = (f"# {rows['rejected']:,} rows were set aside (no text or label, a broken line, a "
                f"duplicate text): {REJECTED}\n" if rows["rejected"] else "")
    return (
        f"# A potstill job written by `potstill init` from {source}: {n:,} usable rows, "
        f"{len(labels)} labels\n"
        f"# (label column {label_column!r}), split with --random-seed {random_seed}.\n"
        f"{rejected}"
        "# Next: `potstill plan config.yaml` reads and checks every file and counts the teacher calls;\n"
        "# then `potstill run config.yaml` publishes a dataset version. Every key not written here\n"
        "# has a default (docs/config.md); `--set key.path=value` overrides any key.\n"
        "# Relative paths are read from this file's folder.\n"
        f"dataset: {q(dataset)}\n"
        f"output_root: {q(output_root)}\n"
        "task:\n"
        f"  labels: {q(labels)}\n"
        "  # Next: tell the teacher what the texts are and what the labels mean, e.g.\n"
        f"  # instruction: {q('Which of ' + ', '.join(labels) + ' fits this text?')}\n"
        "corpus:\n"
        f"{pool_note}"
        f"  unlabeled: {{path: {q(unlabeled)}, text_field: {q(unlabeled_text)}}}\n"
        f"  # {rows['seed']:,} gold rows, stratified by label: the teacher is tuned and judged on them\n"
        "  # before it labels the pool, and the student learns from them.\n"
        '  seed: {path: "seed.jsonl", text_field: "text", label_field: "label"}\n'
        f"  # {rows['test']:,} rows kept apart, stratified by label: never published, only for\n"
        "  # `potstill evaluate` and the student's test metrics.\n"
        '  test: {path: "test.jsonl", text_field: "text", label_field: "label"}\n'
        "# The teacher and the student are the defaults (docs/models.md), e.g.\n"
        '# --set teacher.model=qwen2.5-coder-1.5b-instruct for a stronger teacher.\n')


def init(labelled: str | os.PathLike, *, out: str | os.PathLike | None = None,
         unlabeled: str | os.PathLike | None = None, test_size: int | float | str = DEFAULT_TEST_SIZE,
         seed_size: int | None = None, text_column: str = "text", label_column: str = "label",
         random_seed: int = 0) -> Starter:
    """Write the splits and the config (module docstring); returns what was written.
    `out` defaults to ./jobs/DATASET. Nothing is written unless every check passed."""
    from potstill.config.core import load_yaml, parse_config

    test_size = parse_size(test_size, "--test-size")
    if isinstance(seed_size, bool) or not (seed_size is None or isinstance(seed_size, int) and seed_size >= 1):
        raise StarterError(f"--seed-size must be a number of rows >= 1, got {seed_size!r}")
    files = expand(str(labelled))
    if len(files) != 1:
        raise InputFileError(f"{labelled}: init reads one labelled file; the pattern matches {len(files)}")
    labelled = files[0]
    if unlabeled is not None:
        unlabeled = str(unlabeled)
        for file in expand(unlabeled):  # its text column is checked now, not first at `plan`
            check_file(file, [text_column])
    rows, rejected, labels = read_labelled(labelled, text_column, label_column)
    if len(labels) < 2:
        raise StarterError(f"{labelled}: column {label_column!r} holds "
                           f"{'one label, ' + repr(labels[0]) if labels else 'no usable label'}: "
                           "a classification task needs at least two (--label-column names the column)")
    parts = split([r for r, _ in rows], test_size, seed_size, random_seed, pool=unlabeled is None,
                  where=f"{labelled}, column {label_column!r}")
    text = {r.id: t for r, t in rows}
    position = {r.id: i for i, (r, _) in enumerate(rows)}

    def lines(chosen: list[Record], labelled_rows: bool) -> str:  # in the file's order
        return "".join(_line({"text": text[r.id], **({"label": r.gold_label} if labelled_rows else {})})
                       for r in sorted(chosen, key=lambda r: position[r.id]))

    dataset = dataset_name(labelled)
    folder = Path(out) if out is not None else Path("jobs") / dataset
    content = {"seed.jsonl": lines(parts["seed"], True), "test.jsonl": lines(parts["test"], True)}
    counts = {"seed": len(parts["seed"]), "test": len(parts["test"])}
    if unlabeled is None:
        content["unlabeled.jsonl"] = lines(parts["rest"], False)
        counts.update(unlabeled=len(parts["rest"]), unused=0)
    else:
        counts["unused"] = len(parts["rest"])
    counts["rejected"] = len(rejected)
    if rejected:
        content[REJECTED] = "".join(_line(r.to_row()) for r in rejected)
    content[CONFIG] = config_text(
        dataset=dataset, labels=labels, source=_relative(labelled, folder), label_column=label_column,
        rows=counts, unlabeled="unlabeled.jsonl" if unlabeled is None else _relative(unlabeled, folder),
        unlabeled_text="text" if unlabeled is None else text_column, pooled=unlabeled is None,
        output_root=_relative("potstill-datasets", folder), random_seed=random_seed)
    parse_config(load_yaml(content[CONFIG]), base_dir=folder)  # what `plan` and `run` will read

    there = [str(folder / name) for name in content if (folder / name).exists()]
    if there:
        raise StarterError(f"{', '.join(there)} already exist{'s' if len(there) == 1 else ''}: "
                           "init never overwrites a file (choose another --out)")
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in content.items():
        (folder / name).write_text(data, encoding="utf-8")
    return Starter(folder / CONFIG, labels, counts,
                   {name.split(".")[0]: folder / name for name in content})
