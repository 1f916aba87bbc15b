#!/usr/bin/env bash
# Run on a lent GPU machine inside one lease (see scripts/gpu_bundle.sh): the KD epoch benchmark, then
# Table 1 in a resumable chunk. Everything it writes goes under $OUT (the device tool brings it back);
# put OUT/table1 back in place (carry it) and run again to continue the table in the next lease.
# Budget (a lease is ~15 min of device time, a command at most 10): first the benchmark, whose numbers the
# issue asks for, gets BENCH_MINUTES (default 6; it writes each mode's row as soon as it is timed, so a
# cut keeps them), then the table TABLE_MINUTES (default 2).
# Env: BENCH_STEPS, BENCH_ROUNDS, BENCH_MINUTES, BENCH_ARGS (more kd_epoch_gpu flags), SKIP_BENCH=1, TABLE_MINUTES, TABLE_BATCH,
# TABLE_COMPILE (e.g. reduce-overhead; a table resumes only with the settings it started with).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/gpu_bundle/site" KDZOO_DATA="$PWD/gpu_bundle/data" KDZOO_HOME="${OUT:?set OUT}/kdzoo-home"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python - <<'PY'  # the bundle carries Fashion-MNIST as xz (scripts/gpu_bundle.sh); the loader reads raw IDX files
import lzma, pathlib
for src in pathlib.Path("gpu_bundle/data/fashion-mnist").glob("*.xz"):
    dst = src.with_suffix("")
    if not dst.exists():
        dst.write_bytes(lzma.decompress(src.read_bytes()))
PY
python -c "import torch, zoo; print('torch', torch.__version__, 'zoo', zoo.__file__, 'cuda', torch.cuda.is_available())"
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  # eager, packed, compiled (reduce-overhead: CUDA graphs) and compiled + packed; compilation is outside the clock
  timeout "$(python -c "print(int(60 * ${BENCH_MINUTES:-6}))")" \
    python benchmarks/kd_epoch_gpu.py --out "$OUT/results" --steps "${BENCH_STEPS:-60}" --rounds "${BENCH_ROUNDS:-2}" ${BENCH_ARGS:-} \
    || echo "kd_epoch_gpu stopped (exit $?): the modes it finished are in $OUT/results/kd_epoch-gpu.md"
fi
TABLE_DIR="${TABLE_DIR:-$OUT/table1}"
if [ -d runs/table1-gpu ] && [ ! -d "$TABLE_DIR" ]; then cp -r runs/table1-gpu "$TABLE_DIR"; fi  # continue a carried run
python benchmarks/table1.py --out "$TABLE_DIR" --results "$OUT/results" --time-budget "${TABLE_MINUTES:-2}" \
  --batch-size "${TABLE_BATCH:-128}" --set progress=false ${TABLE_COMPILE:+--set compile=$TABLE_COMPILE}
