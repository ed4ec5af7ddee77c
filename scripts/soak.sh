#!/usr/bin/env bash
# The suite under load (issue 17.8): the README's test command RUNS times in a row on a fresh
# clone of HEAD, beside two CPU-bound processes. One line a run in OUT/results.txt, then "done".
#   bash scripts/soak.sh [RUNS=5] [OUT=/tmp/soak]     (~22-25 min a run on 2 cores)
set -u
RUNS=${1:-5}
OUT=${2:-/tmp/soak}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
rm -rf "$OUT/clone" && git clone -q "$HERE" "$OUT/clone" && cd "$OUT/clone" || exit 2
echo "soak of $(git rev-parse --short HEAD), $(date -u +%FT%TZ)" >> "$OUT/results.txt"
# CI (.ci/run) installs chromium for the report's browser test; without it that test skips here.
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || echo "no chromium: the browser test skips (bash .ci/run installs it)" >> "$OUT/results.txt"
python3 -c 'while True: pass' & H1=$!
python3 -c 'while True: pass' & H2=$!
trap 'kill $H1 $H2 2>/dev/null' EXIT
for i in $(seq 1 "$RUNS"); do
  start=$(date +%s)
  python3 scripts/dev.py test --durations=40 -p no:cacheprovider > "$OUT/run$i.log" 2>&1
  rc=$?
  echo "run $i rc=$rc $(( $(date +%s) - start ))s $(grep -E '^=+ .*(passed|failed).* in ' "$OUT/run$i.log" | tail -1)" >> "$OUT/results.txt"
done
echo done >> "$OUT/results.txt"
