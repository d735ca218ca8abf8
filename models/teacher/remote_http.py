"""HTTP for remote teachers: one JSON client per worker, with the request discipline a batch job
needs against a server fleet or a hosted API.

- Transport: one `httpx.Client` shared by the worker's threads: a pool of up to
  `max_concurrency` keep-alive connections, an idle one dropped after `IDLE_RECONNECT_S` (a
  server may have closed it). It follows the usual environment variables, as curl and pip do:
  HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY for proxies, SSL_CERT_FILE / SSL_CERT_DIR
  for the CA bundle (else the system's default store); loopback addresses never go through a
  proxy.
- Concurrency: `Client.map` runs calls on a pool of `max_concurrency` threads.
- Rate limits: token buckets for requests and tokens per minute (`TokenBucket`), taken before a
  request is sent; a bucket holds ten seconds' worth, so a worker never bursts a minute at once.
- Retries: 429 (waiting what Retry-After says), 408, 5xx, timeouts, dropped connections and
  malformed JSON are retried up to `max_retries` times with exponential backoff and jitter
  (`backoff_s` * 2^attempt, capped at `max_backoff_s`, times a random factor in [0.5, 1]); any
  other 4xx fails at once (`RequestRejected`): sending it again would fail again.
- Usage: every attempt, retry (by cause), failure and the tokens the server reports are counted
  in `usage` (thread-safe); the caller moves them to Beam counters with `take_usage`.

The API key is held by the client only, sent as a bearer header, and never part of a message,
an exception or a log line: the client registers it with models/teacher/remote_redact.py, whose
`redact` removes it (plain, escaped, encoded or cut) from an error body before the body is cut
to `ERROR_BODY_CHARS`, from every `RemoteError` message and from every log record.
A `RemoteError` is an `OSError`: a server that refuses or fails is not a bug in potstill (the
CLI exits 2 with the message, which names the endpoint, the HTTP status and the server's words).
"""
from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence, TypeVar
from urllib.parse import urlsplit

import httpx

from potstill.models.teacher.remote_redact import redact, register

log = logging.getLogger(__name__)
# httpx logs every request at INFO: potstill says what matters itself (retries, failures)
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
T = TypeVar("T")
R = TypeVar("R")
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# A keep-alive connection idle this long is replaced before use: servers close idle ones
# (uvicorn, under vLLM's server, after 5 s), and a request sent on a closed one fails.
IDLE_RECONNECT_S = 4.0
MAX_RETRY_AFTER_S = 600.0
ERROR_BODY_CHARS = 300      # of a server's error body, kept in the message (after redaction)
ERROR_BODY_READ = 1 << 16   # of a server's error body, redacted (then cut)


class RemoteError(OSError):
    """A request that failed after its retries (or at once, for a 4xx), or an answer potstill
    cannot use: the server's doing, so an OSError (exit 2). Its message is redacted."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(redact(message))
        self.status = status


class RequestRejected(RemoteError):
    """A 4xx other than 408/429: the same request would fail again, so it is not retried."""


class _Retry(Exception):
    def __init__(self, cause: str, detail: str, wait_s: float | None = None, status: int | None = None):
        super().__init__(redact(detail))
        self.cause, self.wait_s, self.status = cause, wait_s, status


class TokenBucket:
    """`rate_per_minute` units per minute, at most ten seconds' worth saved up. `take(n)` waits
    until n units are there; a request larger than the bucket waits for a full bucket and
    leaves it in debt, so the long-run rate still holds."""

    def __init__(self, rate_per_minute: float, clock=time.monotonic, sleep=time.sleep):
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, self.rate * 10)
        self.level, self.clock, self.sleep = self.capacity, clock, sleep
        self.last = clock()
        self.lock = threading.Lock()

    def take(self, n: float = 1.0) -> float:
        """Take n units; returns the seconds waited."""
        waited = 0.0
        while True:
            with self.lock:
                now = self.clock()
                self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
                self.last = now
                need = min(n, self.capacity)
                if self.level >= need:
                    self.level -= n
                    return waited
                wait = (need - self.level) / self.rate
            self.sleep(wait)
            waited += wait


def retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class Client:
    """JSON over HTTP to one base URL (e.g. http://host:8000/v1), see the module docstring."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 60.0,
                 max_retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 max_concurrency: int = 8, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, sleep: Callable[[float], None] = time.sleep):
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("base_url must be http(s)://host[:port][/path]")
        self.base_url, self.scheme, self.host = base_url.rstrip("/"), url.scheme, url.hostname
        # what messages name: no user:password@, no query
        self.origin = f"{url.scheme}://{url.netloc.rsplit('@', 1)[-1]}"
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.host_port = url.netloc.rsplit("@", 1)[-1]  # credentials in the URL are never sent
        self.path = url.path.rstrip("/")
        self._key = api_key
        register(api_key)
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s, self.sleep = backoff_s, max_backoff_s, sleep
        self.max_concurrency = max_concurrency
        self.requests = TokenBucket(requests_per_minute, sleep=sleep) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute, sleep=sleep) if tokens_per_minute else None
        self.usage: Counter = Counter()
        self._usage_lock = threading.Lock()
        self._http = http_client(url.hostname, timeout_s, max_concurrency)
        self._pool: ThreadPoolExecutor | None = None

    # --- usage --------------------------------------------------------------------------------
    def count(self, **amounts: float) -> None:
        with self._usage_lock:
            self.usage.update({k: v for k, v in amounts.items() if v})

    def take_usage(self) -> Counter:
        """The usage counted since the last call (and reset it)."""
        with self._usage_lock:
            out, self.usage = self.usage, Counter()
        return out

    def redact(self, text: str) -> str:
        return redact(text, self._key)

    # --- requests -----------------------------------------------------------------------------
    def post(self, path: str, payload: dict, tokens: int = 0, *, root: bool = False) -> dict:
        """POST `payload` to base_url + `path` (the server root + `path` with `root`: vLLM's
        /tokenize); the parsed JSON answer. `tokens`: the request's estimated tokens (prompt +
        completion), taken from the tokens-per-minute bucket."""
        return self._call("POST", path, payload, tokens, root=root)

    def get(self, path: str, *, root: bool = False) -> dict:
        """GET base_url + `path` (the server root + `path` with `root`)."""
        return self._call("GET", path, None, 0, root=root)

    def _call(self, method: str, path: str, payload: dict | None, tokens: int, root: bool = False) -> dict:
        body = None if payload is None else json.dumps(payload).encode()
        target = path if root else self.path + path
        for attempt in range(self.max_retries + 1):
            if self.requests:
                self.requests.take(1)
            if self.tokens and tokens:
                self.tokens.take(tokens)
            self.count(requests=1)
            try:
                answer = self._once(method, target, body)
                usage = answer.get("usage") or {}
                self.count(prompt_tokens=usage.get("prompt_tokens") or 0,
                           completion_tokens=usage.get("completion_tokens") or 0)
                return answer
            except _Retry as retry:
                if attempt == self.max_retries:
                    self.count(failed_requests=1)
                    raise RemoteError(f"{method} {self.origin}{target}: {retry} (gave up after "
                                      f"{self.max_retries} retries)", retry.status) from None
                self.count(retries=1, **{f"retries_{retry.cause}": 1})
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
                if retry.wait_s is not None:
                    delay = max(delay, min(retry.wait_s, MAX_RETRY_AFTER_S))
                log.info("remote teacher: %s %s%s: %s; retry %d in %.2fs", method, self.origin,
                         target, retry, attempt + 1, delay)
                self.sleep(delay)
            except RequestRejected:
                self.count(failed_requests=1, rejected_requests=1)
                raise
        raise AssertionError("unreachable")

    def _once(self, method: str, target: str, body: bytes | None) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        url = f"{self.scheme}://{self.host_port}{target}"
        try:
            resp = self._http.request(method, url, content=body, headers=headers)
            data = resp.content
        except httpx.TimeoutException as err:
            raise _Retry("timeout", f"no answer within {self.timeout_s}s ({type(err).__name__})") from None
        except (httpx.TransportError, OSError) as err:
            if _cert_refused(err):
                raise RequestRejected(f"{method} {self.origin}{target}: TLS certificate refused: "
                                      f"{_cert_refused(err)}") from None
            raise _Retry("connection", f"connection failed ({type(err).__name__}: {err})") from None
        if resp.status_code >= 400:
            text = self.error_body(data)
            if resp.status_code in RETRY_STATUS:
                status = resp.status_code
                cause = "429" if status == 429 else ("5xx" if status >= 500 else "408")
                raise _Retry(cause, f"HTTP {status}: {text}", retry_after_s(resp.headers.get("Retry-After")),
                             status)
            raise RequestRejected(f"{method} {self.origin}{target}: HTTP {resp.status_code}: {text}",
                                  resp.status_code)
        try:
            answer = json.loads(data)
            if not isinstance(answer, dict):
                raise ValueError("not a JSON object")
            return answer
        except ValueError as err:
            raise _Retry("malformed", f"malformed JSON ({err})") from None

    def error_body(self, data: bytes) -> str:
        """A server's error body for a message: redacted whole, on one line, then cut."""
        text = self.redact(data[:ERROR_BODY_READ].decode("utf-8", "replace"))
        text = " ".join(text.split())
        return text if len(text) <= ERROR_BODY_CHARS else text[:ERROR_BODY_CHARS] + "..."

    # --- concurrency --------------------------------------------------------------------------
    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R | BaseException]:
        """fn over items, `max_concurrency` at a time; per item its result or its exception."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="remote-teacher")

        def guarded(item):
            try:
                return fn(item)
            except Exception as err:  # noqa: BLE001 -- handed back per item
                return err
        return list(self._pool.map(guarded, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._http.close()


def http_client(host: str, timeout_s: float, max_concurrency: int) -> httpx.Client:
    """The worker's connection pool (module docstring). Proxies and CA bundle from the
    environment (httpx's `trust_env`), except for a loopback server, which is reached directly;
    HTTP/1.1, whose keep-alive connections `max_concurrency` threads share."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(
        cafile=os.environ.get("SSL_CERT_FILE") or None, capath=os.environ.get("SSL_CERT_DIR") or None)
    loopback = host in LOOPBACK
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s), verify=verify, trust_env=not loopback,
        limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency,
                            keepalive_expiry=IDLE_RECONNECT_S),
        follow_redirects=False)


def _cert_refused(err: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate error behind a transport error, if that is what it is."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ssl.SSLCertVerificationError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def first_error(results: Iterable) -> BaseException | None:
    return next((r for r in results if isinstance(r, BaseException)), None)
