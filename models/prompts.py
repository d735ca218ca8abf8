"""Prompt formatting for label scoring, kept apart from the model that scores it.

The prompt is split into a shared prefix (system prompt, instruction, the label list) and a
per-row part (the text, then the end of the user turn and the assistant header). The prefix is
identical for every row, so a backend computes its key/value cache once and reuses it.
"""
from __future__ import annotations

from dataclasses import dataclass

_SENTINEL = "\x00POTSTILL_TEXT\x00"
DEFAULT_INSTRUCTION = "Classify the text into exactly one of the possible answers."


@dataclass(frozen=True)
class LabelPrompt:
    prefix: str           # everything before the text
    suffix: str           # everything after the text, up to where the answer starts
    answer_prefix: str    # prepended to each label when it is tokenised as the answer
    chat: bool

    def render(self, text: str) -> str:
        return self.prefix + text + self.suffix


def user_message(instruction: str | None, labels: list[str], text: str) -> str:
    return (f"{instruction or DEFAULT_INSTRUCTION}\n"
            f"Possible answers: {', '.join(labels)}\n\n"
            f"Text:\n{text}\n\n"
            "Reply with the answer only.")


def label_prompt(tokenizer, instruction: str | None, labels: list[str]) -> LabelPrompt:
    """Build the scoring prompt with the tokenizer's chat template, or a plain one without it.

    With a chat template the answer starts right after the assistant header, so labels are
    scored without a leading space; in the plain form they follow "Answer:" and get one.
    """
    content = user_message(instruction, labels, _SENTINEL)
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        prefix, _, suffix = rendered.partition(_SENTINEL)
        return LabelPrompt(prefix, suffix, "", chat=True)
    prefix, _, suffix = content.partition(_SENTINEL)
    return LabelPrompt(prefix, suffix + "\nAnswer:", " ", chat=False)
