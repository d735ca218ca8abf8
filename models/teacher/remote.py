"""Remote teachers: any OpenAI-compatible endpoint (`teacher.backend: openai`, settings in
`teacher.endpoint`), behind the same interface as the in-process backends, so the teacher store,
canonical batches, calibration and the contract apply unchanged.

Scoring (`teacher.endpoint.scoring`):

- `exact` (a vLLM server): the prompt is encoded by the shared `TeacherBase` code with the
  teacher's local tokenizer and sent as token ids to `/completions`, so the server reads exactly
  the tokens the HF backend scores, and each candidate's full token sequence is scored (chain
  rule). Two ways, `exact_method`: `logprob_token_ids` asks for the next token's log-probs of
  the candidates' first tokens (one request per row, plus one for the deeper nodes of the
  candidates' token trie when an answer has several tokens; the server's prefix cache serves the
  shared instruction and the row), as the in-process vLLM backend does; `prompt_logprobs`
  appends each candidate to the prompt and reads the log-probs of its tokens (any server with
  vLLM's `prompt_logprobs`; no prefix cache for such requests). Both are log-softmax of the raw
  logits, what HFTeacher computes.
- `top_logprobs` (chat-only APIs): APPROXIMATE. The prompt's user message goes to
  `/chat/completions` with one answer token and its top-k log-probs. A returned token counts for
  a label when it is the start of one of the label's surface forms (or the form itself with
  trailing punctuation), case and surrounding spaces ignored, and only if it fits one label;
  that probability goes to the label's first form. A label none of whose forms appears is given
  min(p_k, unseen mass / unseen labels): no more than the k-th token's probability (else it would
  be in the top k), and no more than its share of the mass the top k leave. What the candidates
  do not cover is `teacher_outside_mass` (per row). Only the answer's first token is seen, so
  labels sharing a first token cannot be told apart, and a multi-token form counts at its first
  token's probability.
- `auto`: exact when the server accepts it, top_logprobs otherwise (models/teacher/remote_endpoint.py).

Every row is one or two HTTP requests, `max_concurrency` in flight (models/teacher/remote_http.py: rate
limits, retries, usage counts). Answers are kept per prompt while the object lives, so a batch
retried or split after one row failed (models/teacher/requests.py) re-sends only the rows not answered.
models/teacher/remote_endpoint.py checks base_url, the key, the model name and the scoring on the
driver, before the pool is sent, and names the setting at fault.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Sequence

import numpy as np

from potstill.models.generation.generate import Generation, Sampling, prompt_seed
from potstill.models.teacher.remote_endpoint import make_client, preflight
from potstill.models.teacher.remote_http import RemoteError, RequestRejected, first_error
from potstill.models.teacher.remote_redact import redact
from potstill.models.teacher.hf import TeacherBase

if TYPE_CHECKING:
    from potstill.config.core import Endpoint

MAX_IDS_PER_REQUEST = 128   # vLLM's limit on logprob_token_ids
FLOOR_LOGPROB = -1e4        # a candidate given no probability (finite: sums and softmax stay defined)
MEMO_ROWS = 4096
_SENTINEL = "\x00POTSTILL_CONTENT\x00"


def _norm(s: str) -> str:
    return s.strip().casefold()


class OpenAITeacher(TeacherBase):
    """The teacher behind an OpenAI-compatible endpoint, with HFTeacher's interface."""

    def __init__(self, model_path: str, labels: list[str], instruction: str | None = None, *,
                 style: str = "labels", verbalizers=None, batch_size: int = 8,
                 max_input_tokens: int = 512, demo_max_tokens: int = 128, dtype: str | None = None,
                 threads: int | None = None, engine: "Endpoint" = None):
        if engine is None:
            raise ValueError("the openai backend needs teacher.endpoint")
        super().__init__(model_path, labels, instruction, style=style, verbalizers=verbalizers,
                         max_input_tokens=max_input_tokens, demo_max_tokens=demo_max_tokens)
        self.batch_size = batch_size
        if engine.scoring == "auto" or (engine.scoring == "exact" and engine.exact_method == "auto"):
            engine = preflight(engine, model_path)
        self.endpoint, self.client = engine, make_client(engine)
        self._memo: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._memo_lock = threading.Lock()
        self.closed = False

    @property
    def approximate(self) -> bool:
        return self.endpoint.scoring == "top_logprobs"

    def _set_prompt(self, style, verbalizers) -> None:
        super()._set_prompt(style, verbalizers)
        if self.prompt.chat:
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True)
            self._around = tuple(rendered.split(_SENTINEL))
        else:
            self._around = ("", "\nAnswer:")
        # Answers are memoised per (prompt, candidates): a variant (models/quality/tuning.py) shares
        # the memo but scores other candidates.
        self._memo_key = (self.style, tuple(self.prompt.verbalizer.candidates))
        forms = [(label, _norm(s)) for label, s in self.prompt.verbalizer.candidates]
        self._forms = [(label, f) for label, f in forms if f]
        self._first_cand = {}
        for c, (label, _) in enumerate(self.prompt.verbalizer.candidates):
            self._first_cand.setdefault(label, c)

    # --- scoring --------------------------------------------------------------------------------
    def score_encoded(self, encoded) -> np.ndarray:
        """Log P(answer | prompt) for every encoded prompt and candidate: [n, C]; approximate
        with scoring top_logprobs (see the module docstring)."""
        prompts = [tuple(self.prompt_ids(e)) for e in encoded]
        results = self.client.map(self._answer, prompts)
        err = first_error(results)
        if err is not None:
            raise err
        return np.vstack(results) if results else np.zeros((0, len(self.cand_ids)))

    def _answer(self, prompt: tuple[int, ...]) -> np.ndarray:
        key = (prompt, self._memo_key)
        with self._memo_lock:
            out = self._memo.get(key)
        if out is None:
            try:
                if self.approximate:
                    out = self._top_logprobs(list(prompt))
                elif self.endpoint.exact_method == "prompt_logprobs":
                    out = self._prompt_logprobs(list(prompt))
                else:
                    out = self._next_token(list(prompt))
            except RequestRejected as err:  # would fail again: the batch's retries re-send nothing
                out = err
            with self._memo_lock:
                self._memo[key] = out
                while len(self._memo) > MEMO_ROWS:
                    self._memo.popitem(last=False)
        if isinstance(out, BaseException):
            raise out
        return out

    def _completions(self, prompts: list[list[int]], **params) -> list[dict]:
        payload = dict(model=self.endpoint.model, prompt=prompts, max_tokens=1, temperature=0.0,
                       **params)
        answer = self.client.post("/completions", payload, tokens=sum(map(len, prompts)) + len(prompts))
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise RemoteError(f"/completions returned {len(choices)} choices for {len(prompts)} prompts")
        return choices

    def _next_token(self, prompt: list[int]) -> np.ndarray:
        out = np.zeros(len(self.cand_ids), dtype=np.float64)
        for depth_zero in (True, False):  # the row first: deeper requests find it in the cache
            nodes = [p for p in self.trie if (len(p) == 0) == depth_zero]
            wanted = sorted({tok for p in nodes for _, tok in self.trie[p]})
            for start in range(0, len(wanted), MAX_IDS_PER_REQUEST):
                ids = wanted[start:start + MAX_IDS_PER_REQUEST]
                choices = self._completions([prompt + list(p) for p in nodes], logprobs=1,
                                            logprob_token_ids=ids, return_tokens_as_token_ids=True)
                for node, choice in zip(nodes, choices):
                    top = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
                    for c, tok in self.trie[node]:
                        if tok in ids:
                            if f"token_id:{tok}" not in top:
                                raise RemoteError(f"/completions returned no log-prob for token {tok}")
                            out[c] += float(top[f"token_id:{tok}"])
        return out

    def _prompt_logprobs(self, prompt: list[int]) -> np.ndarray:
        choices = self._completions([prompt + list(c) for c in self.cand_ids], prompt_logprobs=0)
        out = np.zeros(len(self.cand_ids), dtype=np.float64)
        for c, (cand, choice) in enumerate(zip(self.cand_ids, choices)):
            plp = choice.get("prompt_logprobs") or []
            for j, tok in enumerate(cand):
                entry = plp[len(prompt) + j] if len(prompt) + j < len(plp) else None
                if not entry or str(tok) not in entry:
                    raise RemoteError(f"/completions returned no prompt log-prob for token {tok}")
                value = entry[str(tok)]
                out[c] += float(value["logprob"] if isinstance(value, dict) else value)
        return out

    def chat_content(self, prompt: Sequence[int]) -> str:
        """The user message of a prompt (its rendering minus the chat template around it)."""
        text = self.tokenizer.decode(list(prompt))
        before, after = self._around
        if not (text.startswith(before) and text.endswith(after)):
            raise ValueError("the prompt does not decode to the chat template's user turn")
        return text[len(before): len(text) - len(after)]

    def _top_logprobs(self, prompt: list[int]) -> np.ndarray:
        e = self.endpoint
        payload = dict(model=e.model, messages=[{"role": "user", "content": self.chat_content(prompt)}],
                       max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=e.top_logprobs)
        answer = self.client.post("/chat/completions", payload, tokens=len(prompt) + 1)
        try:
            content = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            top = [(str(t["token"]), float(t["logprob"])) for t in content]
        except (KeyError, IndexError, TypeError, ValueError):
            raise RemoteError("/chat/completions returned no top_logprobs") from None
        return self.map_top(top)

    def map_top(self, top: Sequence[tuple[str, float]]) -> np.ndarray:
        """Candidate log-probs [C] from the answer's first-token top-k (module docstring)."""
        mass = np.zeros(len(self.labels))
        for token, logprob in top:
            t = _norm(token)
            if not t:
                continue
            fits = {label for label, f in self._forms if f.startswith(t) or t.rstrip(".):,!") == f}
            if len(fits) == 1:
                mass[fits.pop()] += math.exp(logprob)
        seen_total = sum(math.exp(lp) for _, lp in top)
        unseen = [label for label in range(len(self.labels)) if mass[label] == 0]
        if unseen and top:
            p_k = min(math.exp(lp) for _, lp in top)
            share = max(0.0, 1.0 - seen_total) / len(unseen)
            for label in unseen:
                mass[label] = min(p_k, share)
        out = np.full(len(self.cand_ids), FLOOR_LOGPROB)
        for label, c in self._first_cand.items():
            if mass[label] > 0:
                out[c] = math.log(mass[label])
        return out

    def take_usage(self):
        return self.client.take_usage()

    def close(self) -> None:
        self.client.close()
        self.closed = True


class OpenAIGenerator:
    """The generation stage through the endpoint's `/chat/completions` (n, temperature, top_p,
    max_tokens and a seed per prompt, see potstill.models.generation.generate.prompt_seed); a
    text that echoes the API key is redacted (models/teacher/remote_redact.py)."""

    def __init__(self, model_path: str, *, dtype: str | None = None, threads: int | None = None,
                 max_prompt_tokens: int = 2048, engine: "Endpoint" = None):
        if engine is None:
            raise ValueError("the openai backend needs teacher.endpoint")
        self.endpoint, self.client = engine, make_client(engine)

    def generate(self, conversations: Sequence[list[dict]], sampling: Sampling) -> list[list[Generation]]:

        def one(item):
            i, messages = item
            payload = dict(model=self.endpoint.model, messages=list(messages), n=sampling.n,
                           temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=sampling.max_new_tokens, seed=prompt_seed(sampling.seed, i))
            answer = self.client.post("/chat/completions", payload, tokens=sampling.n * sampling.max_new_tokens)
            choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
            return [Generation(redact((c.get("message") or {}).get("content") or ""),
                               c.get("finish_reason") == "length") for c in choices]

        results = self.client.map(one, list(enumerate(conversations)))
        err = first_error(results)
        if err is not None:
            raise err
        return results

    def take_usage(self):
        return self.client.take_usage()

    def close(self) -> None:
        self.client.close()


def cost_estimate(endpoint: "Endpoint", teacher: TeacherBase, prompt_tokens: Sequence[int]) -> dict:
    """Requests, tokens and (when priced) USD for scoring prompts of these lengths: exact
    logprob_token_ids sends one request per node level of the candidates' trie, one prompt per
    node; prompt_logprobs one prompt per candidate (the candidate appended); top_logprobs one
    chat request (the chat template's tokens are counted as the local template renders them).
    Every prompt bills one completion token."""
    n = len(prompt_tokens)
    if endpoint.scoring == "top_logprobs":
        requests, prompts, tokens = n, n, sum(prompt_tokens)
    elif endpoint.exact_method == "prompt_logprobs":
        c = len(teacher.cand_ids)
        requests, prompts = n, n * c
        tokens = sum(prompt_tokens) * c + n * sum(map(len, teacher.cand_ids))
    else:
        deep = [p for p in teacher.trie if p]
        requests, prompts = n * (1 + bool(deep)), n * (1 + len(deep))
        tokens = sum(prompt_tokens) * (1 + len(deep)) + n * sum(map(len, deep))
    out = {"requests": requests, "prompt_tokens": tokens, "completion_tokens": prompts,
           "scoring": endpoint.scoring}
    if endpoint.price_per_million is not None:
        price = endpoint.price_per_million
        out["usd"] = round((tokens * price.prompt + prompts * price.completion) / 1e6, 6)
    return out
