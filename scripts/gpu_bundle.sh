#!/usr/bin/env bash
# Prepare gpu_bundle/ (git-ignored) for a lent GPU machine, which reaches no network and has its own
# Python/torch but no kdzoo and no Fashion-MNIST: kdzoo's code as an unpacked wheel (without the bundled
# weights) and the Fashion-MNIST files. Carry it with the device tool (carry: ["gpu_bundle"]), then run
# scripts/gpu_run.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf gpu_bundle && mkdir -p gpu_bundle/site gpu_bundle/data/fashion-mnist gpu_bundle/wheel
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w gpu_bundle/wheel . >/dev/null
.venv/bin/python - <<'PY'
import zipfile, pathlib
wheel = next(pathlib.Path("gpu_bundle/wheel").glob("kdzoo-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("zoo/weights/") and not name.endswith("__init__.py"):
            continue  # the GPU jobs train; they load no bundled checkpoint
        z.extract(name, "gpu_bundle/site")
PY
rm -rf gpu_bundle/wheel
cp /usr/share/datasets/fashion-mnist/*-ubyte.gz gpu_bundle/data/fashion-mnist/
du -sh gpu_bundle
