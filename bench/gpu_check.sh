#!/usr/bin/env bash
# One short run on a machine with a CUDA GPU: every test marked `gpu`, then the GPU benchmark (bench/gpu_bench.py:
# profile tokens/s, modification time per method, peak memory; smollm2-135m and gemma3-270m in bf16), written to
# one report. Designed for under 8 minutes on one GPU (each part has its own time limit).
#
#   make setup && bash bench/gpu_check.sh [OUT_DIR]        # default OUT_DIR: artifacts/gpu_check
#   DEVICE=cpu MODELS=tiny bash bench/gpu_check.sh          # the same code path on a machine without a GPU
#
# Exit status: 0 when the tests passed (or were all skipped on DEVICE=cpu) and every benchmark row measured.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-artifacts/gpu_check}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-smollm2-135m,gemma3-270m}
DTYPE=${DTYPE:-bfloat16}
TESTS_LIMIT_S=${TESTS_LIMIT_S:-180}
BENCH_LIMIT_S=${BENCH_LIMIT_S:-270}
mkdir -p "$OUT"
report="$OUT/report.md"
started=$(date +%s)

"$PY" - > "$OUT/device.txt" 2>&1 <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, CUDA available: {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, bf16: {torch.cuda.is_bf16_supported()}")
PY
if [ "$DEVICE" != cpu ] && ! grep -q "CUDA available: True" "$OUT/device.txt"; then
  echo "gpu_check: no CUDA device visible to torch ($(head -1 "$OUT/device.txt")); DEVICE=cpu runs the code path" >&2
  exit 2
fi

# 1. Every test marked gpu (they skip themselves without CUDA).
timeout "$TESTS_LIMIT_S" "$PY" -m pytest -q -m gpu -p no:cacheprovider -rs tests > "$OUT/gpu-tests.txt" 2>&1
tests_rc=$?
tests_s=$(( $(date +%s) - started ))

# 2. The benchmark (bf16 on the GPU; DEVICE=cpu keeps float32 unless DTYPE is set).
bench_dtype=()
[ -n "$DTYPE" ] && [ "$DEVICE" != cpu ] && bench_dtype=(--dtype "$DTYPE")
bench_extra=()
[ "$DEVICE" = cpu ] && bench_extra=(--tokens 512 --window 128 --methods "quant_rtn:bits=4;prune:sparsity=0.5,method=wanda;bnb_4bit")
timeout "$BENCH_LIMIT_S" "$PY" bench/gpu_bench.py --device "$DEVICE" --models "$MODELS" "${bench_dtype[@]}" \
  "${bench_extra[@]}" --json-out "$OUT/bench.json" > "$OUT/bench.md" 2> "$OUT/bench.log"
bench_rc=$?
total_s=$(( $(date +%s) - started ))

{
  echo "# Hemorrhage Lab GPU check"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), device $DEVICE, total ${total_s} s"
  echo
  echo '```'
  cat "$OUT/device.txt"
  echo '```'
  echo
  echo "## Tests marked gpu (exit $tests_rc, ${tests_s} s; 124 = over ${TESTS_LIMIT_S} s)"
  echo
  echo '```'
  tail -n 40 "$OUT/gpu-tests.txt"
  echo '```'
  echo
  echo "## Benchmark (exit $bench_rc; 124 = over ${BENCH_LIMIT_S} s)"
  echo
  cat "$OUT/bench.md"
  if [ "$bench_rc" -ne 0 ]; then echo; echo '```'; tail -n 30 "$OUT/bench.log"; echo '```'; fi
} > "$report"
echo "gpu_check: report in $report (tests exit $tests_rc, benchmark exit $bench_rc, ${total_s} s)"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
