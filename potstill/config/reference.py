"""The config reference, generated from the config model itself.

Every key path of `Config` (`teacher.batch_size`, `corpus.seed.label_field`, ...) with its
type, its constraints, its default and its description. The description is the field's own
`Field(description=...)`; a section without one (`teacher.few_shot`) takes the first sentence of
its model's docstring; a field without either takes the comment on its line in the source.
Keys with none of the three are listed by `undocumented()` and shown without a description.

    python -m potstill.config.reference docs/config.md   # rewrite the generated section
    python -m potstill.config.reference --check docs/config.md   # exit 1 when it is stale

The section sits between `BEGIN` and `END` in the Markdown file; everything outside the two
markers is left as it is.
"""
from __future__ import annotations

import argparse
import enum
import inspect
import io
import sys
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from potstill.config.core import Config

BEGIN = "<!-- generated: potstill.config.reference -->"
END = "<!-- end generated -->"


@dataclass(frozen=True)
class Key:
    path: str          # dotted key path, e.g. teacher.few_shot.k
    type: str          # readable type with its constraints, e.g. `int`, >= 0
    default: str       # the default as YAML writes it; "" for a section; REQUIRED without one
    description: str   # "" when the field, its section's docstring and its line say nothing
    section: bool      # a nested block (its keys follow it)


def _section_model(annotation) -> type[BaseModel] | None:
    """The nested model of a section field (`Teacher`, or `LabelledSource | None`), else None."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if inspect.isclass(a) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(_yaml(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin in (list, dict, tuple, set):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(annotation))}]"
    if annotation is type(None):
        return "null"
    if annotation is typing.Any:
        return "any"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "min length", "max_length": "max length"}


def _constraints(field: FieldInfo) -> list[str]:
    out = []
    for meta in field.metadata:
        for attr, symbol in _BOUNDS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{symbol} {value}")
    return out


def _yaml(value) -> str:
    """A default or Literal value as it is written in the YAML config."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _yaml(value.value)
    if isinstance(value, str):
        return f'"{value}"' if value == "" or value.strip() != value else value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


REQUIRED = "required"


def _default(field: FieldInfo, section: bool) -> str:
    if field.is_required():
        return REQUIRED
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return REQUIRED
    if section and value is not None:
        return ""  # a block of keys: their own defaults follow
    return _yaml(value)


def _default_cell(default: str) -> str:
    if default == REQUIRED:
        return "**required**"
    return f"`{_cell(default)}`" if default else ""


def _first_sentence(doc: str | None) -> str:
    text = " ".join((doc or "").split())
    head, dot, _ = text.partition(". ")
    return head + ("." if dot else "")


def _line_comments(model: type[BaseModel]) -> dict[str, str]:
    """`name: ... # comment` on one line of the model's class body: {name: comment}."""
    try:
        source = inspect.getsource(model)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    line_first_name: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        row = tok.start[0]
        if tok.type == tokenize.NAME and row not in line_first_name and tok.start[1] == 4:
            line_first_name[row] = tok.string
        elif tok.type == tokenize.COMMENT and row in line_first_name:
            text = tok.string.lstrip("#").strip()
            if not text.startswith("noqa"):
                comments[line_first_name[row]] = text
    return comments


def _description(model: type[BaseModel], name: str, field: FieldInfo, nested) -> str:
    if field.description:
        return " ".join(field.description.split())
    if nested is not None and nested.__doc__:
        return _first_sentence(nested.__doc__)
    return _line_comments(model).get(name, "")


def keys(model: type[BaseModel] = Config, prefix: str = "") -> list[Key]:
    """Every key path under `model`, depth first, in the order the model declares them."""
    out: list[Key] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _section_model(field.annotation)
        type_ = f"`{_type_name(field.annotation)}`"
        bounds = _constraints(field)
        if bounds:
            type_ += ", " + ", ".join(bounds)
        out.append(Key(path, type_, _default(field, nested is not None),
                       _description(model, name, field, nested), nested is not None))
        if nested is not None:
            out.extend(keys(nested, f"{path}."))
    return out


def undocumented(model: type[BaseModel] = Config) -> list[str]:
    """Key paths with no description anywhere (field, section docstring or source comment)."""
    return [k.path for k in keys(model) if not k.description]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(model: type[BaseModel] = Config) -> str:
    """The reference as Markdown: one table per top-level section, top-level scalars first."""
    all_keys = keys(model)
    groups: dict[str, list[Key]] = {}
    for k in all_keys:
        top = k.path.split(".")[0]
        groups.setdefault(top if "." in k.path or k.section else "", []).append(k)
    lines = [f"{len(all_keys)} keys; {len(undocumented(model))} have no description yet "
             "(their rows show the type and default only)."]
    for top, rows in groups.items():
        lines += ["", f"### {'top level' if not top else '`' + top + '`'}", "",
                  "| key | type | default | description |", "|---|---|---|---|"]
        for k in rows:
            lines.append(f"| `{k.path}` | {_cell(k.type)} | {_default_cell(k.default)} | {_cell(k.description)} |")
    return "\n".join(lines)


def replace_section(markdown: str, section: str) -> str:
    """`markdown` with the text between BEGIN and END replaced by `section`."""
    start, end = markdown.find(BEGIN), markdown.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN} ... {END} are missing or out of order")
    return markdown[:start + len(BEGIN)] + "\n" + section.strip("\n") + "\n" + markdown[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m potstill.config.reference",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="the Markdown file holding the markers")
    parser.add_argument("--check", action="store_true", help="only say whether it is current (exit 1 if not)")
    args = parser.parse_args(argv)
    text = args.file.read_text(encoding="utf-8")
    new = replace_section(text, render())
    if args.check:
        print(f"{args.file}: {'current' if new == text else 'stale'}")
        return 0 if new == text else 1
    if new != text:
        args.file.write_text(new, encoding="utf-8")
    print(f"{args.file}: {len(keys())} keys, {len(undocumented())} without a description")
    return 0


if __name__ == "__main__":
    sys.exit(main())
