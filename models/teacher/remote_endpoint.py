"""A remote teacher's endpoint (`teacher.backend: openai`, `teacher.endpoint`): its HTTP client,
with the key read from the environment variable `api_key_env` names, and the start-up checks,
run on the driver before any row is sent: the endpoint answers at `base_url`, takes the key,
serves `model`, and gives the log-probs `scoring` needs; `auto` is resolved here (exact when the
server can, with the first `exact_method` it answers correctly). Every problem is a ConfigError
naming the setting, with anything the server said redacted (models/teacher/remote_redact.py).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from potstill.models.teacher.remote_http import Client, RemoteError, RequestRejected
from potstill.models.teacher.remote_redact import redact, register
from potstill.config.core import ConfigError

if TYPE_CHECKING:
    from potstill.config.core import Config, Endpoint


def api_key(endpoint: "Endpoint") -> str | None:
    """The key from the environment variable named by `api_key_env` (never from the config)."""
    if not endpoint.api_key_env:
        return None
    key = os.environ.get(endpoint.api_key_env)
    if not key:
        raise ConfigError(f"teacher.endpoint.api_key_env: the environment variable "
                          f"{endpoint.api_key_env} is not set (or empty)")
    register(key)
    return key


def make_client(endpoint: "Endpoint", **overrides) -> Client:
    e = endpoint
    kwargs = dict(timeout_s=e.timeout_s, max_retries=e.max_retries, backoff_s=e.backoff_s,
                  max_backoff_s=e.max_backoff_s, max_concurrency=e.max_concurrency,
                  requests_per_minute=e.requests_per_minute, tokens_per_minute=e.tokens_per_minute)
    return Client(e.base_url, api_key(e), **{**kwargs, **overrides})


def resolved_config(cfg: "Config", tokenizer_path: str) -> "Config":
    """`cfg` with its endpoint checked and its scoring resolved (`preflight`), as the store keys
    and the manifest need it: what `auto` chose changes the answers."""
    endpoint = preflight(cfg.teacher.endpoint, tokenizer_path)
    return cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"endpoint": endpoint})})


def preflight(endpoint: "Endpoint", tokenizer_path: str) -> "Endpoint":
    """Check the endpoint before any row is sent; the endpoint with `scoring` (and, for exact,
    `exact_method`) resolved. Every problem is a ConfigError naming the setting."""
    from transformers import AutoTokenizer

    e = endpoint
    client = make_client(e, max_retries=min(e.max_retries, 2), max_concurrency=1)
    try:
        try:
            listed = client.get("/models")
        except RequestRejected as err:
            if err.status in (401, 403):
                where = (f"the server refused the key in ${e.api_key_env}" if e.api_key_env else
                         "the server wants an API key: name the variable that holds it")
                raise ConfigError(f"teacher.endpoint.api_key_env: {where} (HTTP {err.status})") from None
            raise ConfigError(f"teacher.endpoint.base_url: {e.base_url}/models answered HTTP "
                              f"{err.status}: is base_url the API root (ending in /v1)?") from None
        except RemoteError as err:
            raise ConfigError(f"teacher.endpoint.base_url: cannot reach {e.base_url}: {err}") from None
        served = [m.get("id") for m in listed.get("data") or [] if isinstance(m, dict)]
        if served and e.model not in served:
            names = redact(", ".join(map(str, served[:20])))  # a server may list anything
            raise ConfigError(f"teacher.endpoint.model: {e.model!r} is not served at "
                              f"{e.base_url} (it serves: {names})")
        tok = AutoTokenizer.from_pretrained(tokenizer_path)
        ids = tok("The answer is positive.", add_special_tokens=False)["input_ids"]
        method = None
        if e.scoring in ("exact", "auto"):
            method = _exact_method(client, e, ids)
            if method is None and e.scoring == "exact":
                raise ConfigError(f"teacher.endpoint.scoring: exact needs candidate log-probs from "
                                  f"{e.base_url}/completions (vLLM's logprob_token_ids or "
                                  f"prompt_logprobs with token-id prompts); this server gives "
                                  f"neither: use scoring: top_logprobs (approximate)")
            if method is not None:
                _check_tokenizer(client, e, tok)
                return e.model_copy(update={"scoring": "exact", "exact_method": method})
        try:
            answer = client.post("/chat/completions", dict(
                model=e.model, messages=[{"role": "user", "content": "Say yes."}], max_tokens=1,
                temperature=0.0, logprobs=True, top_logprobs=e.top_logprobs))
            answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (RemoteError, KeyError, IndexError, TypeError) as err:
            raise ConfigError(f"teacher.endpoint.scoring: {e.base_url}/chat/completions gives no "
                              f"top_logprobs ({type(err).__name__}: {redact(str(err))}); a teacher "
                              f"needs log-probs") from None
        return e.model_copy(update={"scoring": "top_logprobs"})
    finally:
        client.close()


def _exact_method(client: Client, e: "Endpoint", ids: list[int]) -> str | None:
    """The first exact method the server answers correctly, or None."""
    tried = [e.exact_method] if e.exact_method != "auto" else ["logprob_token_ids", "prompt_logprobs"]
    for method in tried:
        params = (dict(logprobs=1, logprob_token_ids=[ids[-1]], return_tokens_as_token_ids=True)
                  if method == "logprob_token_ids" else dict(prompt_logprobs=0))
        try:
            answer = client.post("/completions", dict(model=e.model, prompt=[ids], max_tokens=1,
                                                      temperature=0.0, **params))
            choice = answer["choices"][0]
            if method == "logprob_token_ids":
                ok = f"token_id:{ids[-1]}" in choice["logprobs"]["top_logprobs"][0]
            else:
                ok = str(ids[-1]) in choice["prompt_logprobs"][-1]
        except (RemoteError, KeyError, IndexError, TypeError):
            ok = False
        if ok:
            return method
    return None


def _check_tokenizer(client: Client, e: "Endpoint", tok) -> None:
    """Exact scoring sends token ids: the served model must read them as the local tokenizer
    wrote them. Checked on vLLM's /tokenize where the server has it."""
    text = "Possible answers: negative, positive\n\nText:\nA fine film."
    root = client.path[: -len("/v1")] if client.path.endswith("/v1") else client.path
    try:
        answer = client.post(f"{root}/tokenize", dict(model=e.model, prompt=text,
                                                      add_special_tokens=False), root=True)
    except RemoteError:
        return  # no /tokenize: nothing to compare with
    theirs = answer.get("tokens")
    if theirs is not None and theirs != tok(text, add_special_tokens=False)["input_ids"]:
        raise ConfigError("teacher.model: its tokenizer encodes differently from the served model "
                          f"{e.model!r}; exact scoring sends token ids, so teacher.model must be "
                          "the served model's folder (or use scoring: top_logprobs)")
