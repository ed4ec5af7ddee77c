#!/usr/bin/env bash
# One session on the device machine (NVIDIA GPU, 16 cores, no network), as one command:
#   run: bash scripts/device_check.sh      (carry: [".whl"]; see NOTES.md for the wheels)
# 0. the clips, generated in parallel (scripts/_device_clips.py);
# 1. NVDEC exactness on every H.264/HEVC fixture and decode speed (scripts/gpu_check.py);
# 2. run --local --decode cpu vs auto on 1080p H.264 (scripts/_device_runs.py);
# 3. the upload link at 200 Mbit/s and 1 Gbit/s where 16 cores can feed it (scripts/_bench_link.py).
# 4. (STEPS=ctx) what a CUDA context per file costs against the primary one (scripts/_device_ctx.py).
# Each step has its own time limit and writes to $OUT as it goes; STEPS picks them.
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > "$OUT/pip.log" 2>&1
export PYTHONPATH=/tmp/site:$PWD
{ date; nproc; nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -V
  python3 -c "import av, numpy; print('av', av.__version__, 'numpy', numpy.__version__)"; } > "$OUT/machine.txt" 2>&1
step() { local name=$1 limit=$2; shift 2; local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$? $(( $(date +%s) - t0 ))s" >> "$OUT/steps.txt"; }
CLIPS=${CLIPS:-16}
STEPS=${STEPS:-clips gpu runs link200 link1000}
for s in $STEPS; do case $s in
  clips) step clips 90 python3 scripts/_device_clips.py --scale "$CLIPS" --link "${LINKCLIPS:-16}" ;;
  gpu) step gpu 180 python3 scripts/gpu_check.py --clips "$CLIPS" --out "$OUT" ;;
  ctx) step ctx 60 python3 scripts/_device_ctx.py ;;
  runs) step runs "${RUNS_S:-130}" python3 scripts/_device_runs.py --clips "$CLIPS" --copies "${COPIES:-16}" \
          --configs "${CONFIGS:---decode cpu;--decode auto}" ;;
  link200) step link200 150 python3 scripts/_bench_link.py --settings 200/50,200/150,200/300 --clips "${LINKCLIPS:-16}" ;;
  link1000) step link1000 45 python3 scripts/_bench_link.py --settings 1000/50 --clips 16 ;;
esac; done
cat "$OUT/steps.txt"
