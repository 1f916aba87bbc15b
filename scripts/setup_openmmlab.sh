#!/usr/bin/env bash
# The OpenMMLab bridge's packages in ./.venv (run scripts/setup.sh first): mmengine, mmdet 3.3 and
# mmsegmentation 1.2.2 on the full mmcv 2.1.0, which PyPI has only as a source package.
#
# The mmcv wheel is built once (about 13 minutes on 2 cores) and cached under
# $KDZOO_HOME/wheels (default ~/.cache/kdzoo/wheels), keyed by mmcv, torch and Python versions: its
# compiled ops link against this torch. Later runs install the cached wheel in seconds.
# What the build needs (measured here, ../shared/DATA.md): setuptools < 81 (mmcv's setup.py uses APIs
# that later setuptools removed), no build isolation (it imports the installed torch), -std=c++20 in
# place of the hard-coded -std=c++17 (torch 2.14's headers need C++20), and MMCV_WITH_OPS=1 (the ops the
# detectors and segmenters use). mmseg also needs ftfy, which it does not declare.
# Env: MAX_JOBS (default 2), KDZOO_HOME.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$PWD/.venv/bin/python"
[ -x "$PY" ] || { echo "run scripts/setup.sh first (no .venv)" >&2; exit 1; }
MMCV=2.1.0
TORCH=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
CACHE="${KDZOO_HOME:-$HOME/.cache/kdzoo}/wheels/mmcv-$MMCV-torch$TORCH-$PYTAG"
WHEEL=$(ls "$CACHE"/mmcv-$MMCV-*.whl 2>/dev/null | head -1 || true)
if [ -z "$WHEEL" ]; then
  if ! command -v g++ >/dev/null; then  # the build compiles mmcv's C++ ops
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq g++ >/dev/null
    else echo "mmcv's build needs a C++ compiler (apt-get install g++)" >&2; exit 1; fi
  fi
  echo "building mmcv $MMCV for torch $TORCH ($PYTAG) once; about 13 minutes on 2 cores; cached in $CACHE"
  WORK=$(mktemp -d)
  SETUPTOOLS=$("$PY" -c 'import setuptools; print(setuptools.__version__)')
  restore() { "$PY" -m pip install -q "setuptools==$SETUPTOOLS"; rm -rf "$WORK"; }
  trap restore EXIT
  "$PY" -m pip install -q -c constraints.txt wheel ninja && "$PY" -m pip install -q "setuptools<81"
  "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV" -d "$WORK"
  tar -xzf "$WORK"/mmcv-$MMCV.tar.gz -C "$WORK"
  sed -i 's/-std=c++17/-std=c++20/g' "$WORK"/mmcv-$MMCV/setup.py
  grep -q -- '-std=c++20' "$WORK"/mmcv-$MMCV/setup.py || { echo "mmcv's setup.py no longer has -std=c++17; check the patch" >&2; exit 1; }
  mkdir -p "$CACHE.partial"
  (cd "$WORK"/mmcv-$MMCV && CFLAGS="-g0 -O1" CXXFLAGS="-g0 -O1" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
     "$PY" -m pip wheel -q --no-build-isolation --no-deps . -w "$CACHE.partial")
  rm -rf "$CACHE" && mv "$CACHE.partial" "$CACHE"  # a killed build leaves no half cache behind
  WHEEL=$(ls "$CACHE"/mmcv-$MMCV-*.whl | head -1)
fi
"$PY" -m pip install -q --no-deps "$WHEEL"
"$PY" -m pip install -q -c constraints.txt -e ".[openmmlab]"
"$PY" -c 'import mmcv, mmdet, mmseg, mmengine; from mmcv.ops import RoIAlign, nms; print("OpenMMLab:", "mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmseg", mmseg.__version__, "mmengine", mmengine.__version__)'
