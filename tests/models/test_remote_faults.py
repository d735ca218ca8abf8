"""The remote teacher's request discipline against a loopback HTTP server of the test's own
(tests/fake_openai.py: real sockets, deterministic answers, injected faults): a `potstill run`
survives 429s, 500s, timeouts, dropped connections and malformed JSON with every row answered
correctly, exactly once in the store, and every retry counted; a 4xx is never retried; the
start-up checks name the setting at fault; the API key appears nowhere."""
import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from potstill.beam_pipelines.cli import main
from fake_openai import FakeOpenAI, logprob
from potstill.models.teacher.remote import OpenAITeacher
from potstill.models.teacher.remote_endpoint import preflight
from potstill.models.teacher.remote_http import Client, RemoteError, RequestRejected, TokenBucket
from potstill.models.teacher.hf import TeacherBase, normalise
from potstill import store
from potstill.config.core import ConfigError, Endpoint

LABELS = ["negative", "positive"]
KEY = "sk-test-0123456789-very-secret"
TEXTS = [f"review number {i}: the film was {'good' if i % 2 else 'bad'} and {'long' * (i % 3 + 1)}"
         for i in range(24)]


def _config(tmp_path: Path, tiny_lm: str, endpoint: dict, seeds: int = 0, **teacher) -> Path:
    (tmp_path / "u.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    corpus = {"unlabeled": {"path": str(tmp_path / "u.jsonl")}}
    if seeds:  # gold rows: the audit scores them on the driver first
        (tmp_path / "s.jsonl").write_text("".join(
            json.dumps({"text": f"gold review {i}", "label": LABELS[i % 2]}) + "\n" for i in range(seeds)))
        corpus["seed"] = {"path": str(tmp_path / "s.jsonl")}
    cfg = {"dataset": "remote", "output_root": str(tmp_path / "out"), "task": {"labels": LABELS},
           "corpus": corpus,
           "teacher": {"model": tiny_lm, "backend": "openai", "batch_size": 4, **teacher,
                       "endpoint": {"model": "teacher", "backoff_s": 0.01, "max_backoff_s": 0.05,
                                    **endpoint}}}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _expected_probs(tiny_lm: str) -> dict[str, list[float]]:
    """What the fake server's answers make of every text: the candidates' chain-rule sums."""
    t = TeacherBase(tiny_lm, LABELS)
    out = {}
    for text in TEXTS:
        prompt = t.prompt_ids(t.encode(text))
        cand = [sum(logprob(prompt + ids[:j], tok) for j, tok in enumerate(ids)) for ids in t.cand_ids]
        out[text] = normalise(t.label_scores(torch.tensor([cand], dtype=torch.float64)).numpy())[0]
    return out


def _version(capsys) -> Path:
    return Path(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_run_survives_every_fault_and_counts_each_retry_once(tmp_path, tiny_lm, capsys, monkeypatch, caplog):
    monkeypatch.setenv("FAKE_TEACHER_KEY", KEY)
    faults = ["429", "500", "timeout", "drop", "malformed", "429", "500", "drop"]
    with FakeOpenAI(key=KEY, faults=faults, slow_s=1.0) as server, caplog.at_level(logging.DEBUG):
        path = _config(tmp_path, tiny_lm, {"base_url": server.base_url, "api_key_env": "FAKE_TEACHER_KEY",
                                           "timeout_s": 0.4, "max_retries": len(faults) + 1,
                                           "max_concurrency": 4, "scoring": "exact"})
        assert main(["run", str(path)]) == 0
        version = _version(capsys)
    assert server.faults == []  # every fault was served
    manifest = json.loads((version / "manifest.json").read_text())
    usage = manifest["teacher_usage"]
    remote = usage["remote"]
    assert manifest["counts"]["totals"]["rejected"] == 0
    assert usage["rows"] == len(TEXTS)
    # every attempt that reached the server is counted once; one retry per fault, by cause
    scoring = server.received["/v1/completions"] - 1  # the start-up probe is not pool usage
    assert remote["requests"] == scoring
    assert remote["retries"] == len(faults)
    assert (remote["retries_429"], remote["retries_5xx"], remote["retries_timeout"],
            remote["retries_connection"], remote["retries_malformed"]) == (2, 2, 1, 2, 1)
    assert remote["requests"] == server.served["/v1/completions"] - 1 + len(faults)
    assert remote["failed_requests"] == 0
    # nothing lost: each row has its own answer; nothing doubled: one store entry per row
    rows = pq.read_table(version / "data" / "part-0.parquet").to_pylist() + \
        pq.read_table(version / "filtered.parquet").to_pylist()
    expected = _expected_probs(tiny_lm)
    assert sorted(r["text"] for r in rows) == sorted(TEXTS)
    for r in rows:
        np.testing.assert_allclose(r["label_probs"], expected[r["text"]], atol=1e-6)
    entries = [k for seg in store.segments(store.root(str(tmp_path / "out")))
               for k, _ in store.read_segment(seg)]
    assert len(entries) == len(set(entries)) == len(TEXTS)
    # the key went to the server (it answered), and nowhere else
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*")
                      if p.is_file() and p.suffix in (".json", ".html", ".yaml", ".txt", ".md"))
    assert KEY not in written and KEY not in caplog.text
    assert manifest["config"]["teacher"]["endpoint"]["api_key_env"] == "FAKE_TEACHER_KEY"


def test_a_rerun_sends_nothing_already_answered(tmp_path, tiny_lm, capsys):
    with FakeOpenAI() as server:
        path = _config(tmp_path, tiny_lm, {"base_url": server.base_url, "scoring": "exact"})
        assert main(["run", str(path)]) == 0
        first = server.received["/v1/completions"]
        assert main(["run", str(path), "--set", "curation.min_confidence=0.01"]) == 0
        manifest = json.loads((_version(capsys) / "manifest.json").read_text())
    assert server.received["/v1/completions"] == first + 1  # the start-up probe only
    assert manifest["teacher_usage"]["remote"]["requests"] == 0
    assert manifest["teacher_usage"]["cache_hits"] == len(TEXTS)


def test_a_4xx_is_not_retried_and_its_row_is_rejected_with_the_reason(tmp_path, tiny_lm, capsys):
    with FakeOpenAI(faults=["400"]) as server:
        path = _config(tmp_path, tiny_lm, {"base_url": server.base_url, "scoring": "exact",
                                           "max_retries": 5})
        assert main(["run", str(path)]) == 0
        version = _version(capsys)
    manifest = json.loads((version / "manifest.json").read_text())
    remote = manifest["teacher_usage"]["remote"]
    assert remote["retries"] == 0 and remote["rejected_requests"] == 1
    # the batch is retried and split by the handler, but the rejected row is never re-sent
    t = TeacherBase(tiny_lm, LABELS)
    per_row = 1 + any(len(ids) > 1 for ids in t.cand_ids)  # the trie's deeper request, if any
    assert remote["requests"] == per_row * len(TEXTS) - (per_row - 1)
    rejected = pq.read_table(version / "rejected.parquet").to_pylist()
    assert [r["reason"] for r in rejected] == ["teacher_error"]
    assert "HTTP 400" in rejected[0]["detail"]
    assert manifest["counts"]["totals"]["read"] == len(TEXTS)


def test_top_logprobs_maps_first_tokens_to_labels_and_reports_the_rest(tiny_lm):
    with FakeOpenAI() as server:
        t = OpenAITeacher(tiny_lm, LABELS, engine=Endpoint(base_url=server.base_url, model="teacher",
                                                            scoring="top_logprobs", top_logprobs=4))
        try:
            cand = t.score_candidates(TEXTS[:3])
        finally:
            t.close()
    # fake top-4: positive -0.4, negative -1.5, The -2.5, neutral -3.0 (fits no label)
    probs = np.exp(cand)
    np.testing.assert_allclose(probs[:, LABELS.index("positive")], np.exp(-0.4), rtol=1e-9)
    np.testing.assert_allclose(probs[:, LABELS.index("negative")], np.exp(-1.5), rtol=1e-9)
    outside = 1 - probs.sum(axis=1)
    np.testing.assert_allclose(outside, 1 - np.exp(-0.4) - np.exp(-1.5), rtol=1e-9)


def test_an_unseen_label_gets_at_most_the_kth_probability(tiny_lm):
    with FakeOpenAI(top=[("positive", -0.1), ("The", -3.0)]) as server:
        t = OpenAITeacher(tiny_lm, LABELS, engine=Endpoint(base_url=server.base_url, model="teacher",
                                                            scoring="top_logprobs"))
        try:
            (cand,) = t.score_candidates(TEXTS[:1])
        finally:
            t.close()
    unseen = np.exp(cand[LABELS.index("negative")])
    assert unseen == pytest.approx(min(np.exp(-3.0), 1 - np.exp(-0.1) - np.exp(-3.0)))


def test_auto_scoring_falls_back_to_top_logprobs_and_exact_is_refused(tiny_lm):
    with FakeOpenAI(exact=False) as server:
        resolved = preflight(Endpoint(base_url=server.base_url, model="teacher", scoring="auto"), tiny_lm)
        assert resolved.scoring == "top_logprobs"
        with pytest.raises(ConfigError, match=r"teacher\.endpoint\.scoring: exact needs"):
            preflight(Endpoint(base_url=server.base_url, model="teacher", scoring="exact"), tiny_lm)
    with FakeOpenAI() as server:
        resolved = preflight(Endpoint(base_url=server.base_url, model="teacher"), tiny_lm)
        assert (resolved.scoring, resolved.exact_method) == ("exact", "logprob_token_ids")


def test_start_up_errors_name_the_setting_and_never_the_key(tiny_lm, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match=r"teacher\.endpoint\.api_key_env: the environment variable "
                                          r"NO_SUCH_KEY_VAR is not set"):
        preflight(Endpoint(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="NO_SUCH_KEY_VAR"), tiny_lm)
    with pytest.raises(ConfigError, match=r"teacher\.endpoint\.base_url: cannot reach"):
        preflight(Endpoint(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout_s=2), tiny_lm)
    monkeypatch.setenv("WRONG_KEY", KEY)
    with FakeOpenAI(key="the-right-one") as server:
        with pytest.raises(ConfigError, match=r"teacher\.endpoint\.api_key_env: the server refused") as err:
            preflight(Endpoint(base_url=server.base_url, model="teacher", api_key_env="WRONG_KEY"), tiny_lm)
        assert KEY not in str(err.value)
        with pytest.raises(ConfigError, match=r"teacher\.endpoint\.api_key_env: the server wants an API key"):
            preflight(Endpoint(base_url=server.base_url, model="teacher"), tiny_lm)
    with FakeOpenAI() as server:
        with pytest.raises(ConfigError, match=r"teacher\.endpoint\.model: 'gpt-x' is not served"):
            preflight(Endpoint(base_url=server.base_url, model="gpt-x"), tiny_lm)
        with pytest.raises(ConfigError, match=r"teacher\.endpoint\.base_url: .* answered HTTP 404"):
            preflight(Endpoint(base_url=server.base_url[:-3] + "/api", model="teacher"), tiny_lm)


def test_a_key_echoed_by_the_server_is_redacted_from_errors():
    with FakeOpenAI(key="something-else") as server:
        client = Client(server.base_url, KEY, max_retries=0)
        with pytest.raises(RequestRejected) as err:
            client.get("/models")
        client.close()
    assert "bad key" in str(err.value) and KEY not in str(err.value)


def test_retry_after_is_honoured_and_backoff_grows():
    waits = []
    with FakeOpenAI(faults=["429", "500", "500"], fault_min_tokens=0) as server:
        server_429_wait = "3"
        client = Client(server.base_url, max_retries=3, backoff_s=0.01, max_backoff_s=1.0,
                        sleep=waits.append)
        # Retry-After from the fake is 0: check the header parsing with a real value too
        from potstill.models.teacher.remote_http import retry_after_s
        assert retry_after_s(server_429_wait) == 3.0
        client.post("/completions", {"model": "teacher", "prompt": [[1, 2]], "logprob_token_ids": [3]})
        client.close()
    assert len(waits) == 3
    assert 0.005 <= waits[0] <= 0.01 and 0.01 <= waits[1] <= 0.02 and 0.02 <= waits[2] <= 0.04
    assert client.usage["retries_429"] == 1 and client.usage["retries_5xx"] == 2


def test_retries_end_in_an_error_after_max_retries():
    with FakeOpenAI(faults=["500"] * 5, fault_min_tokens=0) as server:
        client = Client(server.base_url, max_retries=2, backoff_s=0.001, sleep=lambda s: None)
        with pytest.raises(RemoteError, match="gave up after 2 retries"):
            client.post("/completions", {"model": "teacher", "prompt": [[1]], "logprob_token_ids": [3]})
        client.close()
    assert server.received["/v1/completions"] == 3
    assert client.usage["requests"] == 3 and client.usage["failed_requests"] == 1


def test_token_bucket_holds_the_rate():
    now = [0.0]
    bucket = TokenBucket(60, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    waited = [bucket.take() for _ in range(10)]  # ten seconds' worth saved up: no wait
    assert sum(waited) == 0
    for _ in range(5):
        bucket.take()
    assert now[0] == pytest.approx(5.0)  # then one per second
    tokens = TokenBucket(600, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    start = now[0]
    tokens.take(100)  # the whole bucket at once
    tokens.take(100)  # a full refill: 10 s at 10 tokens/s
    assert now[0] - start == pytest.approx(10.0)


def test_concurrency_keeps_requests_in_flight(tiny_lm):
    """max_concurrency requests at once: with 8 rows whose requests each take 0.3 s, several
    are in flight together."""
    with FakeOpenAI() as server:
        t = OpenAITeacher(tiny_lm, LABELS, engine=Endpoint(base_url=server.base_url, model="teacher",
                                                            scoring="exact", max_concurrency=8))
        inflight, peak = [0], [0]
        original = t.client._once

        def slow(*args):
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
            time.sleep(0.3)
            try:
                return original(*args)
            finally:
                inflight[0] -= 1
        t.client._once = slow
        try:
            t.score_candidates(TEXTS[:8])
        finally:
            t.close()
    assert peak[0] >= 4  # several requests in flight at once (8 threads; the GIL is released)


def test_the_plans_cost_is_what_the_run_is_billed(tmp_path, tiny_lm, capsys):
    from potstill.beam_pipelines.plan import make_plan
    from potstill.config.core import load_config

    with FakeOpenAI() as server:
        path = _config(tmp_path, tiny_lm, {"base_url": server.base_url, "scoring": "exact",
                                           "price_per_million": {"prompt": 1.0, "completion": 2.0}},
                       seeds=4)
        plan = make_plan(load_config(path), sample=0)
        planned = plan["cost"]
        assert plan["audit"]["calls"] == 4  # the audit's requests (driver side) are priced too
        assert server.received["/v1/completions"] == 1  # the start-up probe only
        assert main(["run", str(path)]) == 0
        billed = json.loads((_version(capsys) / "manifest.json").read_text())["teacher_usage"]["remote"]
    assert planned["requests"] == billed["requests"] > 0
    assert planned["prompt_tokens"] == billed["prompt_tokens"]
    assert planned["completion_tokens"] == billed["completion_tokens"]
    assert billed["cost_usd"] > 0 and planned["usd"] == pytest.approx(billed["cost_usd"])


def test_generation_through_the_endpoint_gives_n_texts_per_prompt_seeded_per_prompt():
    from potstill.models.generation.generate import Sampling
    from potstill.models.teacher.remote import OpenAIGenerator

    with FakeOpenAI() as server:
        gen = OpenAIGenerator("unused", engine=Endpoint(base_url=server.base_url, model="teacher"))
        try:
            convs = [[{"role": "user", "content": f"Write review {i}."}] for i in range(3)]
            out = gen.generate(convs, Sampling(n=2, max_new_tokens=8, seed=7))
            usage = gen.take_usage()
        finally:
            gen.close()
    assert [len(g) for g in out] == [2, 2, 2]
    seeds = {g[0].text.rsplit("seed ", 1)[1] for g in out}
    assert len(seeds) == 3  # a seed per prompt, so a prompt's texts do not depend on its batch
    assert usage["requests"] == 3 and usage["completion_tokens"] == 3 * 2 * 3


def test_the_local_model_attribution_loads_never_reads_or_writes_the_remote_store(tiny_lm, tmp_path):
    from potstill.models.teacher.teacher_setup import TeacherSetup
    from potstill.store import TeacherStore

    endpoint = Endpoint(base_url="http://127.0.0.1:9/v1", model="teacher", scoring="exact",
                        exact_method="logprob_token_ids")
    setup = TeacherSetup(tiny_lm, tuple(LABELS), backend="openai", engine=endpoint,
                         store=TeacherStore("remote-identity", str(tmp_path / "store")))
    local = setup.load(backend="hf")  # saliency and its deletion test need the weights
    local.score(TEXTS[:2])
    assert local.store is None and not (tmp_path / "store").exists()
    assert setup.load().store.folder == str(tmp_path / "store")


def test_teacher_usage_counts_what_the_server_received(tmp_path, tiny_lm, capsys):
    """`calls` are the HTTP requests the server received (its own counter), `retries` the HTTP
    requests sent again, `rows` the rows answered: not the handler's row attempts, which count
    a row again on every retry of its batch though an answered row is never re-sent."""
    transient = ["429", "500", "drop", "malformed"]
    with FakeOpenAI(faults=transient, row_faults=["400", "500"]) as server:
        path = _config(tmp_path, tiny_lm, {"base_url": server.base_url, "scoring": "exact",
                                           "max_retries": 2, "timeout_s": 5}, max_retries=1)
        assert main(["run", str(path)]) == 0
        usage = json.loads((_version(capsys) / "manifest.json").read_text())["teacher_usage"]
    remote = usage["remote"]
    assert usage["calls"] == remote["requests"] == server.scoring
    # every retryable fault the server served was retried, but for the last try of a request
    # given up (the row stuck with 500s, 1 + max_retries tries each time it is sent)
    gave_up = remote["failed_requests"] - remote["rejected_requests"]
    assert server.faulted["500"] == 3 * gave_up + 1
    assert usage["retries"] == remote["retries"] == sum(server.faulted.values()) - server.faulted["400"] - gave_up
    assert remote["rejected_requests"] == server.faulted["400"] == 1  # never re-sent
    assert (usage["rows"], usage["rows_failed"]) == (len(TEXTS) - 2, 2)
    assert usage["batch_retries"] > 0  # the handler's, kept apart
