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
# The training split is cut to its first FMNIST_TRAIN images (default 50,000: CIFAR-10's training size, the
# survey's setting and the "50k-image epoch" of the speed goal) so that the bundle still fits beside the
# tracked files once the zoo's bundled weights grew; the IDX header says the new count.
FMNIST_TRAIN="${FMNIST_TRAIN:-50000}" .venv/bin/python - <<'PY'
import gzip, lzma, os, pathlib
keep = int(os.environ["FMNIST_TRAIN"])
for src in sorted(pathlib.Path("/usr/share/datasets/fashion-mnist").glob("*-ubyte.gz")):
    data = gzip.open(src).read()
    if src.name.startswith("train-"):
        ndim = data[3]
        item = 1
        for i in range(1, ndim):
            item *= int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big")
        head = 4 + 4 * ndim
        data = data[:4] + keep.to_bytes(4, "big") + data[8:head] + data[head: head + keep * item]
    dst = pathlib.Path("gpu_bundle/data/fashion-mnist") / (src.name[:-3] + ".xz")
    dst.write_bytes(lzma.compress(data, preset=6))
PY
tracked=$(git ls-files -z | xargs -0 cat | wc -c); bundle=$(du -sb gpu_bundle | cut -f1)
echo "travels: $(( (tracked + bundle) / 1048576 )) MiB (tracked files $(( tracked / 1048576 )) MiB + gpu_bundle $(( bundle / 1048576 )) MiB; the device tool's limit is 64 MiB)"
if [ $(( tracked + bundle )) -gt $(( 64 * 1048576 )) ]; then echo "over the device tool's 64 MiB: the run would be refused" >&2; exit 1; fi
