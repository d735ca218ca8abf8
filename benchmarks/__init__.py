"""potstill's benchmarks: `python -m benchmarks.<name> --help` from the repository root.

Each one takes the harness's arguments (benchmarks/harness.py: --out JSON, --tiny, --work, and
--repeats/--threads/--seeds/--set where they apply), prints an aligned Markdown table and, with
--out, writes its results with the machine they ran on. `--tiny` runs it in seconds on tiny
random models and a synthetic corpus (benchmarks/smoke.py); tests/benchmarks runs every one so.
benchmarks/README.md lists them. Not installed with the wheel.
"""
