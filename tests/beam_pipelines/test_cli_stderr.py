"""What `python -m potstill` writes to a piped stderr: whole lines of the log, no progress bars.

Each command runs as a real process with stderr a pipe (a log file, a CI job), on a tiny random
teacher and student. Every stderr line is a record in the log's format (potstill.progress.
LOG_FORMAT) from a potstill logger, or an indented continuation of the record above it; third
parties may speak only at WARNING and above, and only those named in ALLOWED_WARNINGS.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from potstill.progress import QUIET_ENV

pytestmark = pytest.mark.slow  # five Python processes, each importing torch, transformers and Beam

RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): ")
ALLOWED_WARNINGS: tuple[str, ...] = ()  # third-party loggers whose warnings a user must see


def piped(argv: list[str], cwd) -> subprocess.CompletedProcess:
    """Bytes, decoded here: text mode would turn a bar's "\r" into a newline."""
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}  # the command sets them
    env["POTSTILL_CACHE"] = str(cwd / "cache")
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=300)
    return subprocess.CompletedProcess(argv, done.returncode, done.stdout.decode(), done.stderr.decode())


def potstill(cwd, *args) -> subprocess.CompletedProcess:
    return piped([sys.executable, "-m", "potstill", *args], cwd)


def assert_clean(done: subprocess.CompletedProcess) -> list[str]:
    err = done.stderr
    assert done.returncode == 0, err
    assert "\r" not in err, [line for line in err.split("\n") if "\r" in line][:3]
    lines = err.split("\n")
    assert lines[-1] == "" and RECORD.match(lines[0]), err[:500]
    for line in lines[:-1]:
        record = RECORD.match(line)
        if record is None:
            assert line.startswith("  "), f"not a log line: {line!r}"
            continue
        level, name = record.groups()
        assert name.startswith("potstill") or (
            level in ("WARNING", "ERROR", "CRITICAL") and name.startswith(ALLOWED_WARNINGS)), line
    return lines[:-1]


def test_plan_run_train_evaluate_write_only_whole_log_lines(tmp_path, tiny_lm, tiny_bert):
    # Without the command's set-up, loading the same model does draw a bar: the test can fail.
    control = piped([sys.executable, "-c", "import sys, transformers; transformers."
                     "AutoModelForCausalLM.from_pretrained(sys.argv[1])", tiny_lm], tmp_path)
    assert control.returncode == 0 and "\r" in control.stderr

    rows = [("a fine warm film", "positive"), ("a dull cold film", "negative"),
            ("great acting", "positive"), ("awful acting", "negative")]
    for name, start in (("seed", 0), ("test", 100)):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"text": f"{t} {start + i}", "label": label}) + "\n" for i, (t, label) in enumerate(rows)))
    (tmp_path / "u.jsonl").write_text("".join(json.dumps({"text": f"{t} {200 + i}"}) + "\n"
                                              for i, (t, _) in enumerate(rows)))
    config = {"dataset": "toy", "output_root": "out", "task": {"labels": ["negative", "positive"]},
              "corpus": {"unlabeled": {"path": "u.jsonl"}, "seed": {"path": "seed.jsonl"},
                         "test": {"path": "test.jsonl"}},
              "teacher": {"model": tiny_lm},
              "student": {"model": tiny_bert, "encoder": "finetune", "epochs": 1, "min_steps": 0,
                          "max_length": 16, "recipe": "kd", "export_onnx": False,
                          "gold_only_baseline": False, "threads": 1}}
    (tmp_path / "config.yaml").write_text(json.dumps(config))

    plan = assert_clean(potstill(tmp_path, "plan", "config.yaml", "--sample", "1"))
    assert any("potstill.plan: plan for toy" in line for line in plan)
    run = potstill(tmp_path, "run", "config.yaml")
    assert_clean(run)
    version = run.stdout.strip().splitlines()[-1]
    train = potstill(tmp_path, "train", "--dataset", version, "--config", "config.yaml", "--out", "student")
    assert any("potstill.trainer:" in line for line in assert_clean(train))
    evaluate = potstill(tmp_path, "evaluate", "config.yaml", "--model", "student")
    assert any("potstill.progress: evaluate (student): 4/4 rows" in line for line in assert_clean(evaluate))
    assert json.loads(evaluate.stdout.strip().splitlines()[-1])["n"] == 4
