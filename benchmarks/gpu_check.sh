#!/usr/bin/env bash
# Everything jaxgen checks on one GPU machine, in a single call, from the repo root:
#   bash benchmarks/gpu_check.sh
# 1. makes jaxgen importable (the checkout on PYTHONPATH: no network needed; pip install -e .
#    only if that fails); jax with its CUDA plugin is expected to be installed;
# 2. runs tests/test_kernels.py, test_linear_rnn.py and test_rnn_stacks.py on the GPU at
#    float32 matmul precision "highest" (the tests compare with float64 references; the GPU's
#    default lets matrix products round inputs to TF32): every kernel case runs the real Triton
#    kernel against lax.scan, and mode="cudnn" runs cuDNN against the scan;
# 3. times scan vs pallas vs cuDNN over the grid (benchmarks/kernels.py --check), float32 then
#    bfloat16, each stopped after a time budget (shapes measured so far are kept);
# 4. times the char-RNN train step (2 x 512, B 128, T 100): jaxgen beside Flax
#    (benchmarks/rnn_step.py's JAX worker);
# 5. times the parallel-in-time cells (minGRU, minLSTM, LRU): associative scan against
#    sequential scan (benchmarks/parallel_cells.py; written after each part).
# Every stage has its own time limit (seconds, from the environment; defaults below), so the
# whole script ends in about 9 minutes. Results go to benchmarks/results/gpu/ (or, when $OUT is
# set, to $OUT/gpu_check.tar.gz plus the log): env.txt, pytest.txt, kernels_f32.*, kernels_bf16.*,
# rnn_step_gpu.json, parallel_cells.*, log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
# budgets from the first H200 run (benchmarks/results/gpu_first_run.md): 23 tests took 110 s
# (Triton compiles), the kernel at H 512 over two minutes to compile, H 128 about 12 s
PYTEST_S="${PYTEST_S:-200}"
KERNELS_F32_S="${KERNELS_F32_S:-80}"
KERNELS_BF16_S="${KERNELS_BF16_S:-40}"
RNN_STEP_S="${RNN_STEP_S:-60}"
PARALLEL_S="${PARALLEL_S:-90}"
SEQ="${KERNELS_SEQ:+--seq $KERNELS_SEQ} ${KERNELS_HIDDEN:+--hidden $KERNELS_HIDDEN}"  # grid subsets
PARALLEL_ARGS="${PARALLEL_ARGS:-}"       # e.g. "--skip-target --sweep 256,1024,4096"
# GPU_CHECK_DRY=1: a dry run of this script on a CPU (small shapes, no GPU needed)
DRY="${GPU_CHECK_DRY:-}"
QUICK="${DRY:+--quick}"
SHAPE="char-rnn"
[ -n "$DRY" ] && SHAPE="small"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
if [ -n "${OUT:-}" ]; then RES="$(mktemp -d)"; else RES="benchmarks/results/gpu"; fi
mkdir -p "$RES"
exec > >(tee "$RES/log.txt") 2>&1
export PYTHONUNBUFFERED=1

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout itself: no install needed
(cd /tmp && "$PY" -c "import jaxgen") || "$PY" -m pip install -q -e . || exit 2
if [ -z "$DRY" ] && ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
  echo "jax sees no GPU (install jax[cuda12] or jax[cuda13]): stopping" >&2
  exit 2
fi
{
  "$PY" -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$PY" -m pip list 2>/dev/null | grep -iE "^(jax|flax|optax|torch|triton|nvidia-cudnn)"
} | tee "$RES/env.txt"

stage() {  # stage NAME SECONDS CMD...: run CMD under a time limit, note its status
  local name=$1 secs=$2
  shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${secs}s) ==="
  timeout --kill-after=10 "$secs" "$@"
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0))s ===" | tee -a "$RES/stages.txt"
  [ $rc -eq 0 ] || status=1
}

status=0
stage pytest "$PYTEST_S" env JAX_DEFAULT_MATMUL_PRECISION=highest JAXGEN_TEST_CPU_FLAGS=0 "$PY" -m pytest -q -s -rfE \
  -p no:cacheprovider --durations=10 \
  tests/test_rnn_stacks.py tests/test_linear_rnn.py tests/test_kernels.py  # not yet run there first
cp "$RES/log.txt" "$RES/pytest.txt"

mkdir -p "$RES/f32" "$RES/bf16"
stage kernels-f32 "$((KERNELS_F32_S + 40))" "$PY" benchmarks/kernels.py $QUICK $SEQ --check \
  --dtype float32 --max-seconds "$KERNELS_F32_S" --out "$RES/f32"
[ "$KERNELS_BF16_S" -gt 0 ] && stage kernels-bf16 "$((KERNELS_BF16_S + 40))" \
  "$PY" benchmarks/kernels.py $QUICK $SEQ --check --dtype bfloat16 --max-seconds "$KERNELS_BF16_S" --out "$RES/bf16"
for d in f32 bf16; do
  for ext in json md; do
    [ -f "$RES/$d/kernels.$ext" ] && mv "$RES/$d/kernels.$ext" "$RES/kernels_$d.$ext"
  done
  rmdir "$RES/$d" 2>/dev/null
done

[ "$RNN_STEP_S" -gt 0 ] && stage rnn-step "$RNN_STEP_S" bash -c "'$PY' benchmarks/rnn_step.py --worker jax --shape $SHAPE \
  --reps 10 > '$RES/rnn_step_gpu.json'"

stage parallel-cells "$PARALLEL_S" "$PY" benchmarks/parallel_cells.py $QUICK $PARALLEL_ARGS \
  --out "$RES"

echo "gpu_check finished with status $status; results in $RES"
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/gpu_check.tar.gz" -C "$RES" .
  cp "$RES/log.txt" "$OUT/log.txt"
fi
exit $status
