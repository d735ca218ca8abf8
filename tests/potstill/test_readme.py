from pathlib import Path

from potstill.publish.contract import markdown_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_column_table_is_the_contract():
    from potstill.publish.contract import OPTIONAL_COLUMNS, schema

    assert markdown_table() in README
    assert markdown_table(schema(OPTIONAL_COLUMNS)) in README


def test_readme_documents_every_config_block():
    from potstill.config.core import Config

    for key in Config.model_fields:
        assert f"\n{key}:" in README, f"README's config example lacks `{key}:`"
