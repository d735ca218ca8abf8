"""Generation-distillation (arXiv 2002.00733): a generator LM writes NEW label-conditioned examples.

Three parts, kept apart (distilabel's format_input / generate / format_output):
- prompt formatting: `build_prompts` draws k examples per prompt (seeded) and `format_messages`
  turns a `PromptSpec` into chat messages; `render_prompt` applies the tokenizer's chat template;
- generation: a `Generator` backend (`HFGenerator` here, `VLLMGenerator` in
  models/teacher/vllm_backend.py; `potstill.models.teacher.backends.load_generator` picks one) turns conversations into `Generation`s,
  batched, loaded once per worker;
- output parsing: `parse_output` cleans one output into one example, or returns the raw output
  with a reason (it never raises).

Examples per prompt (`example_source`): `seed` draws k gold seed rows OF THE PROMPT'S LABEL (the
paper's label-conditioned demonstrations); `unlabeled` draws k corpus rows, shown as style
examples with no label; `both` draws ceil(k/2) of the former and the rest from the latter. Every
prompt has its own RNG, seeded by (seed, label, prompt index), so a prompt's examples do not
depend on how many prompts there are or how Beam batches them.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import re
import threading
from dataclasses import dataclass
from typing import Protocol, Sequence

from potstill.rows.records import dedup_key, normalise_text

MAX_EXAMPLE_CHARS = 600  # an example longer than this is cut in the prompt (keeps prompts short)


@dataclass(frozen=True)
class PromptSpec:
    label: str
    index: int                          # the prompt's position among its label's prompts
    labelled: tuple[str, ...] = ()      # seed examples with this label
    unlabeled: tuple[str, ...] = ()     # corpus examples, label unknown

    @property
    def ref(self) -> str:
        return f"generated:{self.label}:{self.index}"


@dataclass(frozen=True)
class Sampling:
    n: int = 1                # outputs per prompt
    temperature: float = 0.9
    top_p: float = 0.95
    max_new_tokens: int = 96
    seed: int = 0             # torch seed for one generate call


def prompt_seed(seed: int, index: int) -> int:
    """A sampling seed per prompt of a batch, for backends that sample a batch in one call (vLLM
    gives a prompt's n samples seed..seed+n-1; remote endpoints take one seed per request)."""
    return int(hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclass(frozen=True)
class Generation:
    text: str                 # the decoded new tokens, special tokens removed
    truncated: bool           # stopped at max_new_tokens, not at an end-of-sequence token


@dataclass(frozen=True)
class Parsed:
    text: str | None          # the example, normalised; None when parsing failed
    reason: str | None        # why parsing failed (None on success)
    raw: str                  # the output as the model wrote it, always kept
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.text is not None


# --- prompt formatting ----------------------------------------------------------------------

def _draw(pool: Sequence[str], k: int, rng: random.Random) -> tuple[str, ...]:
    return tuple(rng.sample(list(pool), min(k, len(pool)))) if k > 0 else ()


def build_prompts(labels: Sequence[str], prompts_per_label: int, k: int, example_source: str,
                  seed_pool: dict[str, Sequence[str]], unlabeled_pool: Sequence[str],
                  seed: int = 0) -> list[PromptSpec]:
    """Every prompt to send: `prompts_per_label` per label, each with its own drawn examples.

    `seed_pool` maps a label to its seed texts, `unlabeled_pool` is a sample of corpus texts;
    both should be in a stable order (the callers sort them by id). A pool smaller than k gives
    fewer examples; an empty one gives none (a zero-shot prompt), never an error.
    """
    if example_source not in ("seed", "unlabeled", "both"):
        raise ValueError(f"example_source must be seed, unlabeled or both, got {example_source!r}")
    n_seed = {"seed": k, "unlabeled": 0, "both": math.ceil(k / 2)}[example_source]
    specs = []
    for label in labels:
        for i in range(prompts_per_label):
            rng = random.Random(f"{seed}:{label}:{i}")  # str seeds are stable across processes
            labelled = _draw(seed_pool.get(label, ()), n_seed, rng)
            unlabeled = _draw(unlabeled_pool, k - n_seed, rng)
            specs.append(PromptSpec(label, i, labelled, unlabeled))
    return specs


def _clip(text: str) -> str:
    return text if len(text) <= MAX_EXAMPLE_CHARS else text[:MAX_EXAMPLE_CHARS].rstrip() + " ..."


DEFAULT_REQUEST = ('Write ONE new text in the same language and style whose answer is "{label}". '
                   "Do not copy the examples. Reply with the new text only.")


def format_messages(spec: PromptSpec, labels: Sequence[str], instruction: str | None,
                    request: str | None = None) -> list[dict]:
    """The chat messages asking for one new example whose answer is `spec.label`.

    `request` is the closing request with a `{label}` placeholder (config `generation.prompt`);
    naming the domain there ("a short movie review") helps small generators a lot.
    """
    lines = []
    if instruction:
        lines.append(f"Task: {instruction}")
    lines.append(f"Possible answers: {', '.join(labels)}")
    if spec.labelled:
        lines.append(f'\nExamples whose answer is "{spec.label}":')
        lines += [f"- {_clip(t)}" for t in spec.labelled]
    if spec.unlabeled:
        lines.append("\nMore examples from the same collection (any answer):")
        lines += [f"- {_clip(t)}" for t in spec.unlabeled]
    lines.append("\n" + (request or DEFAULT_REQUEST).replace("{label}", spec.label))
    return [{"role": "user", "content": "\n".join(lines)}]


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt string: the tokenizer's chat template, or a plain form without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\nNew text:"


# --- output parsing -------------------------------------------------------------------------

_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("\u00ab", "\u00bb"),
           ("\u201e", "\u201c"), ("\u300c", "\u300d"), ("\u300e", "\u300f"), ("`", "`")]
_PAIRS = {'"': '"', "\u201c": "\u201d", "\u00ab": "\u00bb", "\u300c": "\u300d"}
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d{1,3}[.)]|#{1,6})\s+")
_PREFIX = re.compile(
    r"^\s*(?:\*\*)?(?:(?:new|generated|example|sample|my)\s+)?"
    r"(?:text|review|example|sentence|document|output|answer|response|post|comment|tweet|article)"
    r"(?:\s*#?\s*\d+)?(?:\s*\([^)]{0,40}\))?\s*(?:\*\*)?\s*[:\uff1a]\s*(?:\*\*)?\s*", re.I)
_META = re.compile(r"^\s*\(?(?:label|sentiment|answer|category|class|note)\s*[:\uff1a]", re.I)
# Chat models' openers ("Sure! Here is one."); a line ending in a colon is dropped in any language.
_CHATTY = re.compile(r"^\s*(?:sure|certainly|of course|okay|ok|here(?:'s| is| are))\b", re.I)


def _label_patterns(labels: Sequence[str]) -> tuple[re.Pattern, re.Pattern]:
    alt = "|".join(re.escape(l) for l in sorted(labels, key=len, reverse=True))
    prefix = re.compile(rf"^\s*(?:[\[(]\s*(?:{alt})\s*[\])]\s*[:\uff1a\-\u2013\u2014]?"
                        rf"|(?:{alt})\s*[:\uff1a\-\u2013\u2014])\s*", re.I)
    suffix = re.compile(rf"\s*[\[(]\s*(?:(?:label|sentiment|answer)\s*[:\uff1a]\s*)?(?:{alt})\s*[\])]\s*$", re.I)
    return prefix, suffix


def _strip_quotes(text: str) -> str:
    text = text.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        text = text[3:-3].strip()
    for left, right in _QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            inner = text[len(left):-len(right)]
            if left not in inner and right not in inner:  # '"a" and "b"' is not one quoted text
                return inner.strip()
    # An opening quote never closed (the model stopped or ran on), or a closing one never opened.
    if text[:1] in _PAIRS and _PAIRS[text[0]] not in text[1:]:
        return text[1:].strip()
    if text[-1:] in _PAIRS.values() and not any(o in text[:-1] for o, c in _PAIRS.items() if c == text[-1]):
        return text[:-1].strip()
    return text


def _is_preamble(paragraph: list[str]) -> bool:
    return len(paragraph) == 1 and (paragraph[0].rstrip().rstrip("*").endswith((":", "\uff1a"))
                                    or bool(_CHATTY.match(paragraph[0])))


def parse_output(raw: str, labels: Sequence[str], truncated: bool = False) -> Parsed:
    """One example from one output, or the raw output and why there is none.

    Steps: split the output into paragraphs (blank lines) and drop leading preamble paragraphs
    ("Here is a new review:", "Sure! ..."); the first remaining paragraph is the example (inputs
    are whitespace-normalised, so a corpus text never has paragraphs; later paragraphs are
    commentary or more examples). Inside it, drop preamble lines ending in a colon; when it is a
    list of items (list markers, "Text 2:"-style prefixes) keep the first item; drop meta lines
    ("Label: positive", "Note: ..."); strip prefixes ("Review:", "Text 3:", "positive:",
    "[positive]"), a trailing "(positive)" and quotes. Reasons: `empty_output`, `preamble_only`
    ("Here is a review:" and nothing after it), `no_text`
    (nothing left after cleaning), `label_only` (the text is a label), `truncated` (the model hit
    max_new_tokens inside the kept text, so it was cut off mid-way).
    """
    if not raw or not raw.strip():
        return Parsed(None, "empty_output", raw or "")
    paragraphs = [[l for l in block.splitlines() if l.strip()]
                  for block in re.split(r"\n\s*\n", raw.strip())]
    paragraphs = [p for p in paragraphs if p]
    while len(paragraphs) > 1 and _is_preamble(paragraphs[0]):
        paragraphs = paragraphs[1:]
    lines, cut_tail = paragraphs[0], len(paragraphs) > 1
    if len(lines) == 1 and lines[0].rstrip().rstrip("*").endswith((":", "\uff1a")):
        return Parsed(None, "preamble_only", raw, "only an introduction, no example after it")
    while len(lines) > 1 and _is_preamble(lines[:1]):
        lines = lines[1:]
    itemised = [i for i, l in enumerate(lines) if _LIST_MARKER.match(l) or _PREFIX.match(l)]
    if len(itemised) >= 2 and itemised[0] == 0:
        cut_tail, lines = True, lines[: itemised[1]]
    cut_tail = cut_tail or bool(_META.match(lines[-1]))  # the example ended before a meta line
    text = " ".join(l for l in lines if not _META.match(l))
    label_prefix, label_suffix = _label_patterns(labels)
    for _ in range(3):  # prefixes nest: '1. Review: "positive: ..."'
        before = text
        text = _LIST_MARKER.sub("", text, count=1)
        text = _PREFIX.sub("", text, count=1)
        text = label_prefix.sub("", text, count=1)
        text = label_suffix.sub("", text, count=1)
        text = _strip_quotes(text)
        if text == before:
            break
    text = normalise_text(text)
    if not dedup_key(text):  # nothing visible (invisible characters only) is no text
        return Parsed(None, "no_text", raw, "nothing left after removing prefixes, labels and quotes")
    if text.strip(" .!").casefold() in {l.casefold() for l in labels}:
        return Parsed(None, "label_only", raw, "the output is a label, not an example")
    if truncated and not cut_tail:
        return Parsed(None, "truncated", raw, "stopped at max_new_tokens inside the example")
    return Parsed(text, None, raw)


# --- generation backends --------------------------------------------------------------------

class Generator(Protocol):
    """What a generation backend offers: one call per batch of conversations."""

    def generate(self, conversations: Sequence[list[dict]], sampling: Sampling) -> list[list[Generation]]:
        """`sampling.n` generations for each conversation, in order."""


class HFGenerator:
    """Transformers backend: batched `generate` with left padding, sampling seeded per call.

    Calls are serialised with a lock: the torch seed is global state, and two concurrent calls
    on the same weights would only compete for the same cores.
    """

    def __init__(self, model_path: str, *, dtype: str = "float32", threads: int | None = None,
                 max_prompt_tokens: int = 2048):
        import torch
        from transformers import AutoTokenizer

        from potstill.models.loading import causal_lm

        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"  # new tokens must follow every prompt directly
        self.model = causal_lm(model_path, dtype)  # shared with the teacher when it is the same
        self.max_prompt_tokens = max_prompt_tokens
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {e for e in eos + [self.tokenizer.eos_token_id] if e is not None}
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)
        self._lock = threading.Lock()

    def generate(self, conversations: Sequence[list[dict]], sampling: Sampling) -> list[list[Generation]]:
        import torch

        prompts = [render_prompt(self.tokenizer, c) for c in conversations]
        # The chat template already has the special tokens it wants.
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                             truncation=True, max_length=self.max_prompt_tokens)
        with self._lock, torch.inference_mode():
            torch.manual_seed(sampling.seed)
            out = self.model.generate(
                **enc, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                max_new_tokens=sampling.max_new_tokens, num_return_sequences=sampling.n,
                pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids))
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        gens = []
        for ids in new:
            stop = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
            kept = ids if stop is None else ids[:stop]
            gens.append(Generation(self.tokenizer.decode(kept, skip_special_tokens=True), stop is None))
        return [gens[i * sampling.n:(i + 1) * sampling.n] for i in range(len(prompts))]
