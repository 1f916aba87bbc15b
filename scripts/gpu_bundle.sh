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
# xz instead of gzip: 26.5 MB instead of 30.6 MB, because the device tool carries the tracked files
# and this bundle within 64 MiB in all; scripts/gpu_run.sh unpacks them there.
.venv/bin/python - <<'PY'
import gzip, lzma, pathlib
for src in sorted(pathlib.Path("/usr/share/datasets/fashion-mnist").glob("*-ubyte.gz")):
    dst = pathlib.Path("gpu_bundle/data/fashion-mnist") / (src.name[:-3] + ".xz")
    dst.write_bytes(lzma.compress(gzip.open(src).read(), preset=6))
PY
tracked=$(git ls-files -z | xargs -0 cat | wc -c); bundle=$(du -sb gpu_bundle | cut -f1)
echo "travels: $(( (tracked + bundle) / 1048576 )) MiB (tracked files $(( tracked / 1048576 )) MiB + gpu_bundle $(( bundle / 1048576 )) MiB; the device tool's limit is 64 MiB)"
if [ $(( tracked + bundle )) -gt $(( 64 * 1048576 )) ]; then echo "over the device tool's 64 MiB: the run would be refused" >&2; exit 1; fi
