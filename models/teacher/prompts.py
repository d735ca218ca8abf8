"""Prompt formatting for label scoring, kept apart from the model that scores it.

A prompt is one user turn:

    {instruction}
    Possible answers: negative, positive          (or "A) negative\\nB) positive" with letters)

    Text:                                         \\
    {demonstration text}                           } one block per demonstration, if any
    Answer: {its answer}                          /

    Text:
    {text}

    Reply with the answer only.

followed by the assistant header. Everything before the first per-row part (`head`) is the
same for every row, so a backend computes its key/value cache once and reuses it; without
demonstrations the shared part extends to "Text:\\n" (`prefix`).

How a label is *answered* is a verbalizer: one or more surface forms per label (their
probabilities are summed), or a letter per label in the `letters` style.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Mapping, Sequence

_SENTINEL = "\x00POTSTILL_ROW\x00"
DEFAULT_INSTRUCTION = "Classify the text into exactly one of the possible answers."
TEXT_INTRO = "Text:\n"


@dataclass(frozen=True)
class Demo:
    text: str
    answer: str      # the surface form the model should reply with (a label or a letter)


@dataclass(frozen=True)
class Verbalizer:
    """What the model may answer for each label: [(label index, surface form)], and the list
    the prompt shows."""
    candidates: tuple[tuple[int, str], ...]
    shown: str
    answers: tuple[str, ...]          # the canonical answer per label (used in demonstrations)


def verbalizer(labels: Sequence[str], style: str = "labels",
               forms: Mapping[str, Sequence[str]] | None = None) -> Verbalizer:
    if style == "letters":
        if len(labels) > 26:
            raise ValueError("the letters prompt style supports at most 26 labels")
        letters = string.ascii_uppercase[: len(labels)]
        shown = "\n" + "\n".join(f"{c}) {l}" for c, l in zip(letters, labels))
        return Verbalizer(tuple(enumerate(letters)), shown, tuple(letters))
    forms = forms or {}
    unknown = set(forms) - set(labels)
    if unknown:
        raise ValueError(f"verbalizers name labels not in task.labels: {sorted(unknown)}")
    cands, answers = [], []
    for i, label in enumerate(labels):
        surfaces = list(dict.fromkeys(forms.get(label) or [label]))
        cands += [(i, s) for s in surfaces]
        answers.append(surfaces[0])
    return Verbalizer(tuple(cands), ", ".join(answers), tuple(answers))


@dataclass(frozen=True)
class LabelPrompt:
    head: str             # shared by every row: template start, instruction, answer list
    suffix: str           # after the text, up to where the answer starts
    answer_prefix: str    # prepended to each answer when it is tokenised
    chat: bool
    verbalizer: Verbalizer = field(repr=False, default=None)

    @property
    def prefix(self) -> str:
        """Everything before the text when there are no demonstrations."""
        return self.head + TEXT_INTRO

    def row(self, text: str, demos: Sequence[Demo] = ()) -> str:
        """The per-row part that follows `head`."""
        block = "".join(f"{TEXT_INTRO}{d.text}\nAnswer: {d.answer}\n\n" for d in demos)
        return block + TEXT_INTRO + text + self.suffix

    def render(self, text: str, demos: Sequence[Demo] = ()) -> str:
        return self.head + self.row(text, demos)


def user_message(instruction: str | None, shown: str, row: str) -> str:
    return f"{instruction or DEFAULT_INSTRUCTION}\nPossible answers: {shown}\n\n{row}"


def label_prompt(tokenizer, instruction: str | None, labels: list[str], style: str = "labels",
                 forms: Mapping[str, Sequence[str]] | None = None) -> LabelPrompt:
    """Build the scoring prompt with the tokenizer's chat template, or a plain one without it.

    With a chat template the answer starts right after the assistant header, so answers are
    scored without a leading space; in the plain form they follow "Answer:" and get one.
    """
    verb = verbalizer(labels, style, forms)
    reply = "Reply with the letter only." if style == "letters" else "Reply with the answer only."
    content = user_message(instruction, verb.shown, _SENTINEL + f"\n\n{reply}")
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        head, _, suffix = rendered.partition(_SENTINEL)
        return LabelPrompt(head, suffix, "", True, verb)
    head, _, suffix = content.partition(_SENTINEL)
    return LabelPrompt(head, suffix + "\nAnswer:", " ", False, verb)
