"""The remote teacher's API key against a server that echoes it back (tests/fake_openai.py, on
loopback): in /v1/models, in 4xx bodies (plain, JSON-escaped, split by escapes, URL-encoded,
base64 of user:key, cut by the server, straddling the 300th character where a message is cut,
JSON inside JSON) and in 5xx bodies. A real job runs against it; then every file under the
output root (parquet read row by row, JSON, HTML, README.md, anything else as text), the logs,
stdout, stderr and the error messages are searched for the key in each of those forms and for
every 8-character piece of it."""
import base64
import json
import logging
import re
from pathlib import Path
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest

from fake_openai import ECHO_FORMS, FakeOpenAI, echo
from potstill.beam_pipelines.cli import main
from potstill.config.core import ConfigError, Endpoint
from potstill.models.teacher.remote_endpoint import preflight
from potstill.models.teacher.remote_http import Client, RemoteError
from test_remote_faults import TEXTS, _config

# "/", "+" and "=" change under JSON, URL and base64 encodings
KEY = "sk-live/9Qz+TmX4=pL7wR2/vN8kY3bH6"
ENV = "POTSTILL_TEST_TEACHER_KEY"


def _betrayals(key: str = KEY) -> set[str]:
    """Every form of the key the outputs must not hold: whole forms, and every 8 characters of
    the plain, JSON-escaped, URL-encoded and base64 (user:key) forms; 4 characters of the
    \\u-escaped forms (every character, or every other one, escaped)."""
    slash, url = key.replace("/", "\\/"), quote(key, safe="")
    basic = base64.b64encode(f"apikey:{key}".encode()).decode()
    unicode = "".join(f"\\u{ord(c):04x}" for c in key)
    split = "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(key))
    whole = {key, slash, url, basic, unicode, split, json.dumps(key), json.dumps(json.dumps(key))}
    pieces = {f[i:i + 8] for f in (key, slash, url, basic[12:-4]) for i in range(len(f) - 7)}
    pieces |= {unicode[i:i + 24] for i in range(0, len(unicode) - 23, 6)}
    pieces |= {split[i:i + 14] for i in range(len(split) - 13)}
    return whole | pieces


BETRAYALS = _betrayals()


def leaks(text: str) -> list[str]:
    return sorted(b for b in BETRAYALS if b in text)


def _output_texts(root: Path) -> dict[str, str]:
    """Every file under `root` as text: parquet row by row, the rest decoded as UTF-8."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        if p.suffix == ".parquet":
            table = pq.read_table(p)
            out[str(p)] = json.dumps(table.to_pylist(), default=str) + str(table.schema.metadata)
        else:
            out[str(p)] = p.read_bytes().decode("utf-8", "replace")
    return out


def test_the_forms_are_what_a_server_sends():
    """The fake's echoes hold the key in the forms BETRAYALS names (else the test proves nothing)."""
    for form in ECHO_FORMS:
        assert leaks(echo(KEY, form)), form
    assert not leaks("an error body that holds no key: 0123456789 positive negative")


@pytest.mark.parametrize("form", ECHO_FORMS)
def test_redaction_comes_before_the_cut_wherever_the_key_stands(form):
    """An error body echoing the key at any offset around the cut, in any form: the message
    kept holds no piece of the key."""
    from potstill.models.teacher.remote_http import ERROR_BODY_CHARS
    from potstill.models.teacher.remote_redact import redact

    client = Client("http://127.0.0.1:9/v1", KEY)
    body = echo(KEY, form)
    for offset in range(ERROR_BODY_CHARS - 60, ERROR_BODY_CHARS + 5):
        text = client.error_body(("." * offset + body).encode())
        assert not leaks(text), (offset, text)
        assert "\n" not in text and len(text) <= ERROR_BODY_CHARS + 3
    client.close()
    assert redact(body) == redact(redact(body))
    assert not leaks(redact(body, KEY))


def test_a_job_against_a_server_echoing_the_key_writes_and_prints_it_nowhere(
        tmp_path, tiny_lm, capsys, caplog, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    row_faults = [f"400-echo-{form}" for form in ECHO_FORMS] + \
        ["500-echo-plain", "500-echo-json", "500-echo-straddle"]
    transient = ["500-echo-unicode", "503-echo-split", "429"]
    with FakeOpenAI(key=KEY, row_faults=row_faults, faults=transient, models_echo="plain") as server, \
            caplog.at_level(logging.DEBUG):
        path = _config(tmp_path, tiny_lm, {"base_url": server.base_url, "api_key_env": ENV,
                                           "scoring": "exact", "max_retries": 2},
                       max_retries=0)
        assert main(["run", str(path)]) == 0
        out, err = capsys.readouterr()
    assert server.faults == [] and sum(server.faulted[k] for k in row_faults) >= len(row_faults)
    version = Path(out.strip().splitlines()[-1])
    rejected = pq.read_table(version / "rejected.parquet").to_pylist()
    assert len(rejected) == len(row_faults)
    assert all(r["reason"] == "teacher_error" and r["raw"] in TEXTS for r in rejected)
    statuses = sorted(re.search(r"HTTP (\d+)", r["detail"]).group(1) for r in rejected)
    assert statuses == ["400"] * len(ECHO_FORMS) + ["500"] * 3
    assert all(server.base_url in r["detail"] for r in rejected)  # names the endpoint
    assert all("[api key]" in r["detail"] for r in rejected)
    files = _output_texts(tmp_path / "out")
    assert any(p.endswith("manifest.json") for p in files) and any(p.endswith(".html") for p in files)
    assert any(p.endswith("README.md") for p in files)
    found = {p: leaks(text) for p, text in files.items() if leaks(text)}
    assert not found
    assert "[api key]" in caplog.text  # the retries were logged, with what the server said
    for name, text in (("logs", caplog.text), ("stdout", out), ("stderr", err)):
        assert not leaks(text), name


@pytest.mark.parametrize("fault", ["400-echo-straddle", "400-echo-json", "500-echo-split"])
def test_an_http_error_in_the_seed_audit_is_a_user_error_naming_the_endpoint(
        fault, tmp_path, tiny_lm, capsys, caplog, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with FakeOpenAI(key=KEY, row_faults=[fault]) as server, caplog.at_level(logging.DEBUG):
        path = _config(tmp_path, tiny_lm, {"base_url": server.base_url, "api_key_env": ENV,
                                           "scoring": "exact", "max_retries": 1}, seeds=4)
        assert main(["run", str(path)]) == 2
        out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("potstill: error: POST "), err
    status = fault.split("-")[0]
    assert f"{server.base_url}/completions: HTTP {status}" in lines[0]
    assert "[api key]" in lines[0] and "Traceback" not in err
    for name, text in (("logs", caplog.text), ("stdout", out), ("stderr", err)):
        assert not leaks(text), name
    assert not leaks("\n".join(_output_texts(tmp_path / "out").values()))


@pytest.mark.parametrize("form", ECHO_FORMS)
def test_a_models_listing_that_echoes_the_key_is_redacted_from_the_error(form, tiny_lm, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with FakeOpenAI(key=KEY, models_echo=form) as server:
        with pytest.raises(ConfigError, match=r"teacher\.endpoint\.model: 'gpt-x' is not served") as err:
            preflight(Endpoint(base_url=server.base_url, model="gpt-x", api_key_env=ENV), tiny_lm)
    assert "ft:" in str(err.value) and not leaks(str(err.value))


def test_the_cli_never_prints_a_key_the_models_listing_echoes(tmp_path, tiny_lm, capsys, caplog, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with FakeOpenAI(key=KEY, models_echo="json") as server, caplog.at_level(logging.DEBUG):
        path = _config(tmp_path, tiny_lm, {"base_url": server.base_url, "api_key_env": ENV,
                                           "model": "gpt-x"})
        assert main(["run", str(path)]) == 2
        out, err = capsys.readouterr()
    assert "teacher.endpoint.model: 'gpt-x' is not served" in err
    for name, text in (("logs", caplog.text), ("stdout", out), ("stderr", err)):
        assert not leaks(text), name


def test_5xx_bodies_of_the_start_up_check_are_redacted_in_logs_and_errors(tiny_lm, caplog, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    faults = ["500-echo-json", "502-echo-straddle", "503-echo-url"]
    with FakeOpenAI(key=KEY, models_faults=faults) as server, caplog.at_level(logging.DEBUG):
        with pytest.raises(ConfigError, match=r"teacher\.endpoint\.base_url: cannot reach") as err:
            preflight(Endpoint(base_url=server.base_url, model="teacher", api_key_env=ENV,
                               max_retries=2, backoff_s=0.01), tiny_lm)
    assert "HTTP 503" in str(err.value) and "[api key]" in str(err.value)
    assert caplog.text.count("[api key]") >= 2  # the two retries, logged
    assert not leaks(str(err.value)) and not leaks(caplog.text)


def test_a_remote_error_is_a_user_error_and_keeps_its_status_when_pickled():
    import pickle

    err = RemoteError(f"POST http://h/v1/completions: HTTP 401: bad key {KEY}", 401)
    assert isinstance(err, OSError) and not leaks(str(err))
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.status == 401


def test_a_log_line_carrying_the_key_is_redacted(caplog):
    Client("http://127.0.0.1:9/v1", KEY).close()  # registers the key
    log = logging.getLogger("potstill.test_secrets")
    with caplog.at_level(logging.INFO):
        log.info("the server said %s", echo(KEY, "split"))
        try:
            raise RuntimeError(f"a library error holding {KEY}")
        except RuntimeError:
            log.exception("failed")
    assert "[api key]" in caplog.text and not leaks(caplog.text)
