"""A small OpenAI-compatible HTTP server of the tests' own, on loopback, for the remote teacher's
fault tests: real sockets and real HTTP, deterministic answers, and faults on request.

Answers: the log-prob of token `t` after the token ids `p` is `logprob(p, t)`, a fixed function
of both, so a test can compute what every row's answer must be. `/v1/completions` answers
vLLM's `logprob_token_ids` requests; `/v1/chat/completions` answers top_logprobs requests and
generation requests (n texts); `/v1/models` lists the served model; no `/tokenize`.

Faults (`faults`: kinds, each used once, in arrival order, on scoring requests only, i.e.
completions whose prompts are longer than `fault_min_tokens`, so the start-up checks are never
hit): `429` (with Retry-After: 0), `500`, `timeout` (answers after `slow_s`), `drop` (closes the
connection without answering), `malformed` (200 with a body that is not JSON), `400` (a request
that fails again when repeated), and `<status>-echo-<form>` (an error with that status whose body
echoes the key the request carried, as some servers and proxies do, in one of `ECHO_FORMS`).
`row_faults`: kinds that stick to a row: the i-th distinct scoring prompt gets the i-th kind
every time it is sent, so that row ends rejected whatever the retries. `models_faults`: faults
on `GET /v1/models`; `models_echo`: a form in which `/v1/models` lists the key among its models.

`received` counts every request that reached the server, by path; `scoring` the scoring
requests among them (the ones faults may hit: the start-up checks excluded); `served` the
answered ones; `faulted` the faults by kind.
"""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

# the forms in which a server echoes a key (`echo`)
ECHO_FORMS = ("plain", "json", "unicode", "split", "url", "basic", "straddle", "prefix", "double")


def echo(key: str, form: str) -> str:
    """An error body (JSON text) that echoes `key` in `form`: `plain`; `json` (an encoder that
    escapes "/"); `unicode` (every character as \\uXXXX); `split` (every other character
    escaped); `url` (percent-encoded); `basic` (base64 of user:key); `straddle` (plain, starting
    10 characters before the 300th, where a message is cut); `prefix` (the server's own cut:
    the first 12 characters); `double` (a JSON body inside a JSON string, escaped twice)."""
    if form == "json":
        shown = key.replace("/", "\\/")
    elif form == "unicode":
        shown = "".join(f"\\u{ord(c):04x}" for c in key)
    elif form == "split":
        shown = "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(key))
    elif form == "url":
        shown = quote(key, safe="")
    elif form == "basic":
        shown = base64.b64encode(f"apikey:{key}".encode()).decode()
    elif form == "prefix":
        shown = key[:12] + "..."
    elif form == "double":
        return json.dumps({"error": json.dumps({"message": f"bad key {key}"}).replace("/", "\\/")})
    else:
        shown = key
    pad = "x" * max(0, 290 - len('{"error": {"message": "') - len("invalid request from "))
    message = f"invalid request from {pad if form == 'straddle' else 'key'} {shown}"
    return '{"error": {"message": "' + message + '", "type": "invalid_request_error"}}'


def logprob(prefix, token: int) -> float:
    digest = hashlib.sha256(f"{list(prefix)}|{token}".encode()).hexdigest()
    return -0.05 - (int(digest[:8], 16) % 997) / 100.0


class FakeOpenAI:
    def __init__(self, model: str = "teacher", *, key: str | None = None, exact: bool = True,
                 faults=(), fault_min_tokens: int = 20, slow_s: float = 1.0, row_faults=(),
                 models_faults=(), models_echo: str | None = None,
                 top=(("positive", -0.4), ("negative", -1.5), ("The", -2.5), ("neutral", -3.0))):
        self.model, self.key, self.exact, self.top = model, key, exact, list(top)
        self.faults, self.fault_min_tokens, self.slow_s = list(faults), fault_min_tokens, slow_s
        self.row_faults, self.models_faults = list(row_faults), list(models_faults)
        self.models_echo, self._row_kind = models_echo, {}
        self.received, self.served, self.faulted = Counter(), Counter(), Counter()
        self.scoring = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _next_fault(self, path: str, body: dict) -> str | None:
        if path == "/v1/models":
            with self.lock:
                return self.models_faults.pop(0) if self.models_faults else None
        prompts = body.get("prompt")
        if not (isinstance(prompts, list) and prompts and isinstance(prompts[0], list)
                and len(prompts[0]) > self.fault_min_tokens):
            return None
        with self.lock:
            self.scoring += 1
            row = tuple(prompts[0])
            if row not in self._row_kind and len(self._row_kind) < len(self.row_faults):
                self._row_kind[row] = self.row_faults[len(self._row_kind)]
            if row in self._row_kind:
                self.faulted[self._row_kind[row]] += 1
                return self._row_kind[row]
            if self.faults:
                kind = self.faults.pop(0)
                self.faulted[kind] += 1
                return kind
        return None

    def _answer(self, path: str, body: dict, key: str = "") -> tuple[int, dict]:
        if path == "/v1/models":
            data = [{"id": self.model, "object": "model"}]
            if self.models_echo:  # a listing that shows the caller's key
                data += [{"id": f"ft:{echo(key, self.models_echo)}", "object": "model", "owned_by": key}]
            return 200, {"object": "list", "data": data}
        if body.get("model") != self.model:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
        if path == "/v1/completions":
            if not self.exact or "logprob_token_ids" not in body:
                return 400, {"error": {"message": "unsupported parameter"}}
            ids = body["logprob_token_ids"]
            choices = [{"index": i, "text": "", "finish_reason": "length",
                        "logprobs": {"top_logprobs": [{f"token_id:{t}": logprob(p, t) for t in ids}]}}
                       for i, p in enumerate(body["prompt"])]
            usage = {"prompt_tokens": sum(map(len, body["prompt"])), "completion_tokens": len(choices)}
        elif path == "/v1/chat/completions":
            if body.get("logprobs"):
                content = [{"token": "positive", "logprob": self.top[0][1],
                            "top_logprobs": [{"token": t, "logprob": lp}
                                             for t, lp in self.top[: body.get("top_logprobs", 5)]]}]
                choices = [{"index": 0, "message": {"role": "assistant", "content": "positive"},
                            "logprobs": {"content": content}, "finish_reason": "length"}]
            else:
                choices = [{"index": i, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": f"A brand new review number {i}, seed {body.get('seed')}."}}
                    for i in range(body.get("n", 1))]
            usage = {"prompt_tokens": 10, "completion_tokens": 3 * len(choices)}
        else:
            return 404, {"error": {"message": f"no route {path}"}}
        with self.lock:
            self.prompt_tokens += usage["prompt_tokens"]
            self.completion_tokens += usage["completion_tokens"]
        return 200, {"object": "x", "model": self.model, "choices": choices, "usage": usage}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: bytes, headers=()):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def _serve(self, body: dict):
                with fake.lock:
                    fake.received[self.path] += 1
                auth = self.headers.get("Authorization", "")
                if fake.key and auth != f"Bearer {fake.key}":
                    # echoes what it got, as some servers do: the client must redact it
                    return self._send(401, json.dumps({"error": f"bad key: {auth}"}).encode())
                fault = fake._next_fault(self.path, body)
                if fault and "-echo-" in fault:
                    status, form = fault.split("-echo-")
                    return self._send(int(status), echo(auth.removeprefix("Bearer "), form).encode())
                if fault == "429":
                    return self._send(429, b'{"error": "slow down"}', [("Retry-After", "0")])
                if fault in ("500", "400"):
                    return self._send(int(fault), b'{"error": "injected"}')
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                if fault == "timeout":  # no answer until the client has given up
                    time.sleep(fake.slow_s)
                    self.close_connection = True
                    return None
                if fault == "malformed":
                    return self._send(200, b'{"choices": [ not json')
                status, answer = fake._answer(self.path, body, auth.removeprefix("Bearer "))
                if status == 200:
                    with fake.lock:
                        fake.served[self.path] += 1
                try:
                    self._send(status, json.dumps(answer).encode())
                except OSError:  # the client gave up (timeout)
                    pass

            def do_GET(self):
                self._serve({})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self._serve(json.loads(self.rfile.read(length) or b"{}"))

        return Handler
