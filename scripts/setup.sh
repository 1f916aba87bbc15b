#!/usr/bin/env bash
# Set up kdzoo in ./.venv: the Debian data package (Fashion-MNIST), then the pinned Python packages.
# Works offline on machines that reach only the package registries. Re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist, or set KDZOO_DATA);" \
         "zoo.load/predict work without it, eval and the tests need it" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,classification,plot]"
echo "kdzoo is set up in .venv ($(.venv/bin/python -c 'import zoo; print(zoo.__version__)'))"
