"""What every benchmark shares: its command line, a `--tiny` smoke mode, an aligned Markdown
table on stdout and, with `--out`, a JSON file of the results and the machine they ran on.

    bench = Benchmark("backends", __doc__, tiny={"rows": 8, "model": lambda ws: ws.teacher},
                      repeats=3, threads=None)
    bench.parser.add_argument("--rows", type=int, default=200)
    args = bench.parse(argv)
    ...
    return bench.report(rows, {"backend": "name", "rows/s": "rows_per_s:.2f"})

`--tiny` builds the smoke workspace (benchmarks/smoke.py: tiny random models, a synthetic
corpus, a config) under --work and makes the benchmark's `tiny` values the defaults; a value
may be a function of the workspace; what the command line sets still wins. Progress goes to
stderr as JSON lines, so a long run shows its figures before the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]

# The arguments several benchmarks take; a benchmark asks for one by giving its default.
COMMON: dict[str, Callable[[argparse.ArgumentParser, Any], Any]] = {
    "repeats": lambda p, d: p.add_argument("--repeats", type=int, default=d,
                                           help="timed passes; figures are medians over them"),
    "threads": lambda p, d: p.add_argument("--threads", type=int, default=d,
                                           help="torch threads (none: all cores)"),
    "seeds": lambda p, d: p.add_argument("--seeds", type=int, nargs="+", default=d, help="student seeds"),
    "sets": lambda p, d: p.add_argument("--set", dest="sets", action="append", default=list(d),
                                        metavar="KEY.PATH=VALUE", help="config override (repeatable)"),
}


class Benchmark:
    def __init__(self, name: str, doc: str, *, tiny: dict[str, Any] | None = None,
                 work: str | None = None, **common: Any):
        self.name, self.tiny, self.args = name, tiny or {}, argparse.Namespace()
        self.started = time.time()
        self.parser = argparse.ArgumentParser(
            prog=f"python -m benchmarks.{name}", description=doc.split("\n\n")[0],
            epilog="\n\n".join(doc.split("\n\n")[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
        self.parser.add_argument("--out", metavar="JSON", help="also write the results, the command "
                                 "and the machine (CPU, cores, RAM, Python, torch) here")
        self.parser.add_argument("--tiny", action="store_true", help="smoke run: tiny random models, a "
                                 "synthetic corpus, the smallest sizes (checks the code; figures mean nothing)")
        self.parser.add_argument("--work", default=work, help="folder for the run's files (and --tiny's "
                                 f"models and corpus){'' if work else '; default: a temporary folder'}")
        for key, default in common.items():
            COMMON[key](self.parser, default)

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        self.argv = list(sys.argv[1:] if argv is None else argv)
        args = self.parser.parse_args(self.argv)
        args.workspace = None
        if args.tiny:
            from benchmarks.smoke import workspace

            args.work = args.work or tempfile.mkdtemp(prefix=f"potstill-{self.name}-")
            ws = workspace(Path(args.work) / "tiny") if any(map(callable, self.tiny.values())) else None
            self.parser.set_defaults(**{k: v(ws) if callable(v) else v for k, v in self.tiny.items()})
            args = self.parser.parse_args(self.argv)
            args.workspace = ws
        self.args = args
        return args

    def require(self, *names: str) -> None:
        """Arguments a real run needs and --tiny fills in (argparse's `required` would refuse --tiny)."""
        missing = [n for n in names if getattr(self.args, n) in (None, [])]
        if missing:
            self.parser.error("the following arguments are required (or --tiny): "
                              + ", ".join(n.replace("_", "-") for n in missing))

    def work(self) -> Path:
        """--work, made (a temporary folder when none was given)."""
        if not self.args.work:
            self.args.work = tempfile.mkdtemp(prefix=f"potstill-{self.name}-")
        path = Path(self.args.work).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def progress(self, record: dict) -> None:
        print(json.dumps(record, default=str), file=sys.stderr, flush=True)

    def report(self, rows: list[dict], columns: dict[str, str | Callable[[dict], Any]], *,
               title: str | None = None, notes: list[str] = (), **extra: Any) -> int:
        """Print `title`, the table and `notes`; with --out, write them as JSON. Returns 0."""
        print("\n".join(([title, ""] if title else []) + [markdown(rows, columns)]
                        + (["", *notes] if notes else [])), flush=True)
        if self.args.out:
            write_json(self.args.out, self.result(rows, title=title, notes=list(notes), **extra))
        return 0

    def result(self, rows: list[dict], **extra: Any) -> dict:
        args = {k: v for k, v in vars(self.args).items() if k != "workspace"}
        clash = set(extra) & {"benchmark", "command", "args", "machine", "started", "seconds", "rows"}
        assert not clash, f"{self.name} reports {sorted(clash)}, the harness's own keys"
        return {"benchmark": self.name, "command": " ".join([self.parser.prog, *self.argv]),
                "args": args, "machine": machine(), "started": time.strftime(
                    "%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
                "seconds": round(time.time() - self.started, 1), "rows": rows, **extra}


def cell(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not spec:
        spec = ".4g"
    return format(value, spec)


def markdown(rows: list[dict], columns: dict[str, str | Callable[[dict], Any]]) -> str:
    """An aligned Markdown table: `columns` maps each heading to a row key, "key:format" (a
    format spec) or a function of the row; None shows as "-"."""
    def value(row, how):
        if callable(how):
            got = how(row)
            return got if isinstance(got, str) else cell(got)
        key, _, spec = how.partition(":")
        return cell(row.get(key), spec)
    body = [[value(r, how) for how in columns.values()] for r in rows]
    widths = [max(3, len(h), *(len(line[i]) for line in body)) for i, h in enumerate(columns)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(list(columns)), line(["-" * w for w in widths]), *map(line, body)])


def mean_sd(values: list[float], spec: str = ".3f") -> str:
    """"mean ± sd" (sd 0 for one value)."""
    import statistics

    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{spec}} ± {sd:{spec}}"


def machine() -> dict:
    """What the figures depend on: CPU model, cores, RAM, load, Python, torch, the code's commit."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    if hasattr(os, "sched_getaffinity"):
        info["cores_usable"] = len(os.sched_getaffinity(0))
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        info["ram_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    if hasattr(os, "getloadavg"):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except ImportError:
        info["torch"] = None
    try:
        info["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=_plain, ensure_ascii=False) + "\n")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays, paths and the rest, as JSON can hold them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
