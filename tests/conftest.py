"""Shared fixtures: tiny random models built in the test session (no weights downloaded)."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs a real packaged model (still run in CI)")


@pytest.fixture(autouse=True)
def _own_embedding_cache(tmp_path, monkeypatch):
    """Each test starts with an empty embedding cache (models/embed_cache.py) of its own."""
    monkeypatch.setenv("POTSTILL_EMBEDDING_CACHE", str(tmp_path / "embedding-cache"))


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> str:
    """A 2-layer random Llama with a byte-level BPE tokenizer and a chat template, on disk."""
    from potstill.models.tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer random BERT with the MiniLM tokenizer, on disk: a student in seconds."""
    from potstill.models.registry import ModelUnavailable
    from potstill.models.tiny import build_tiny_bert

    try:
        return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    except ModelUnavailable as err:  # its tokenizer is the packaged MiniLM's
        pytest.skip(str(err))
