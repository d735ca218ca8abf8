"""README.md and docs/ against the code they document: the column contract table, the config
example and the generated config reference. (Markdown hygiene and the commands in code blocks:
tests/test_docs.py.)"""
import re
from pathlib import Path

import yaml

from potstill.config.core import Config, parse_config
from potstill.config import reference
from potstill.publish.contract import markdown_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONFIG_DOC = (ROOT / "docs" / "config.md").read_text()
COLUMNS_DOC = (ROOT / "docs" / "columns.md").read_text()

# Config keys whose field has no description, whose section model no docstring and whose source
# line no comment: the reference shows their type and default only. A new key must not join
# them (describe it with Field(description=...)); a key that gains a description may leave.
KNOWN_UNDESCRIBED = {
    "dataset", "task", "task.kind", "task.instruction", "corpus", "corpus.unlabeled",
    "corpus.unlabeled.text_field", "corpus.unlabeled.label_field", "corpus.seed",
    "corpus.seed.text_field", "corpus.seed.label_field", "corpus.test", "corpus.test.text_field",
    "corpus.test.label_field", "teacher", "teacher.prompt_style", "teacher.few_shot.selection",
    "teacher.few_shot.seed", "teacher.calibration", "teacher.content_free_inputs", "student",
    "student.model", "student.epochs", "student.batch_size", "student.learning_rate",
    "student.max_length", "student.seed", "student.threads", "records.min_chars",
    "records.max_chars", "curation", "curation.min_confidence", "curation.max_per_label",
    "validation", "audit.search.calibration", "audit.search.prompt_styles", "generation.enabled",
    "generation.example_source", "generation.temperature", "generation.top_p",
    "generation.max_new_tokens", "generation.seed", "generation.min_chars", "generation.max_chars",
    "generation.max_repeated_ngram_ratio", "saliency.enabled", "saliency.method", "saliency.seed",
    "signals.enabled", "signals.ta_batch_size", "signals.seed", "budget.rounds", "budget.seed",
}


def _config_example() -> str:
    blocks = re.findall(r"^```yaml\n(.*?)^```$", CONFIG_DOC, re.S | re.M)
    assert blocks, "docs/config.md has no ```yaml example"
    return blocks[0]


def _schema_key_paths() -> set[str]:
    """Every key path of Config, read from its JSON schema (independently of the reference)."""
    schema = Config.model_json_schema()
    defs = schema.get("$defs", {})

    def resolve(node: dict) -> dict | None:
        if "$ref" in node:
            return defs[node["$ref"].rsplit("/", 1)[-1]]
        for option in node.get("anyOf", []) + node.get("allOf", []):
            found = resolve(option)
            if found is not None:
                return found
        return node if "properties" in node else None

    def walk(node: dict, prefix: str) -> set[str]:
        paths = set()
        for name, prop in node.get("properties", {}).items():
            paths.add(prefix + name)
            nested = resolve(prop)
            if nested is not None:
                paths |= walk(nested, f"{prefix}{name}.")
        return paths

    return walk(schema, "")


def test_columns_doc_table_is_the_contract():
    from potstill.publish.contract import OPTIONAL_COLUMNS, schema

    assert markdown_table() in COLUMNS_DOC
    assert markdown_table(schema(OPTIONAL_COLUMNS)) in COLUMNS_DOC


def test_columns_doc_rejected_table_is_the_contract():
    from potstill.publish.contract import REJECTED_SCHEMA

    assert markdown_table(REJECTED_SCHEMA) in COLUMNS_DOC


def test_readme_points_to_the_reference():
    for doc in ("docs/config.md", "docs/columns.md", "docs/cli.md"):
        assert f"]({doc})" in README, f"README.md does not link {doc}"


def test_readme_test_command_is_what_ci_runs():
    tests_section = README.split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    assert tests_section.startswith("\n`make test` runs everything")
    assert "CI runs `make test`" in tests_section
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make test" in [line.strip() for line in ci], ".ci/run no longer runs `make test`"
    assert re.search(r"^test:", (ROOT / "Makefile").read_text(), re.M), "Makefile has no `test` target"


def test_config_example_documents_every_config_block():
    example = "\n" + _config_example()
    for key in Config.model_fields:
        assert f"\n{key}:" in example, f"docs/config.md's config example lacks `{key}:`"


def test_config_example_is_a_valid_config():
    parse_config(yaml.safe_load(_config_example()))


def test_config_reference_is_current():
    assert reference.replace_section(CONFIG_DOC, reference.render()) == CONFIG_DOC, (
        "docs/config.md's reference is stale: run `python -m potstill.config.reference docs/config.md`")


def test_config_doc_names_every_key_path():
    paths = _schema_key_paths()
    assert paths == {k.path for k in reference.keys()}
    missing = sorted(p for p in paths if f"`{p}`" not in CONFIG_DOC)
    assert not missing, f"docs/config.md does not name {missing}"


def test_every_new_config_key_has_a_description():
    undescribed = set(reference.undocumented())
    assert undescribed <= KNOWN_UNDESCRIBED, (
        f"describe these config keys with Field(description=...): {sorted(undescribed - KNOWN_UNDESCRIBED)}")


def test_reference_rows_show_type_default_and_description():
    rows = {k.path: k for k in reference.keys()}
    assert rows["teacher.batch_size"].type == "`int`, >= 1"
    assert rows["teacher.batch_size"].default == "8"
    assert rows["teacher.batch_size"].description == "rows per forward pass"
    assert rows["dataset"].default == reference.REQUIRED
    assert rows["teacher.few_shot"].description.startswith("Demonstrations from the gold seed rows")
    assert rows["teacher.content_free_inputs"].default == '[N/A, [MASK], ""]'
    assert "| `teacher.batch_size` | `int`, >= 1 | `8` | rows per forward pass |" in CONFIG_DOC


def test_replace_section_keeps_the_text_around_the_markers():
    doc = f"before\n{reference.BEGIN}\nold\n{reference.END}\nafter\n"
    assert reference.replace_section(doc, "new") == f"before\n{reference.BEGIN}\nnew\n{reference.END}\nafter\n"
