#!/usr/bin/env bash
# Fused-kernel check on one GPU machine, in a single call, from the repo root:
#   bash benchmarks/gpu_check.sh
# 1. installs jaxgen (pip install -e .) if it is not importable; jax[cuda] is
#    expected to be installed (if jax sees no GPU the script tries
#    `pip install "jax[cuda12]"` once, then stops if there is still none);
# 2. runs tests/test_kernels.py on the GPU: mode="pallas" now lowers for cuda,
#    so every case runs the real Triton kernel against lax.scan; and the
#    recurrent tests, where mode="cudnn" runs cuDNN against the scan;
# 3. times scan vs pallas vs cuDNN over the full grid, float32 then bfloat16,
#    with --check (kernel vs scan numerics at every grid shape);
# 4. times the parallel-in-time cells (minGRU, minLSTM, LRU): associative scan
#    against sequential scan (benchmarks/parallel_cells.py, at most 4 minutes).
# Results go to $OUT if set (else benchmarks/results): kernels.json/.md,
# kernels_bf16.json/.md, parallel_cells.json/.md/.png, pytest.txt, env.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"

"$PY" -c "import jaxgen" 2>/dev/null || "$PY" -m pip install -q -e .
if ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
  echo "jax sees no GPU; trying pip install jax[cuda12] once" >&2
  "$PY" -m pip install -q "jax[cuda12]==$("$PY" -c 'import jax; print(jax.__version__)')" || true
  "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" \
    || { echo "no GPU backend for jax: stopping" >&2; exit 2; }
fi
"$PY" -c "import jax; print(jax.__version__, jax.devices())" | tee "$OUT_DIR/env.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$OUT_DIR/env.txt" 2>&1 || true

status=0
"$PY" -m pytest -q tests/test_kernels.py tests/test_linear_rnn.py tests/test_rnn_stacks.py -p no:cacheprovider 2>&1 | tee "$OUT_DIR/pytest.txt" || status=1

"$PY" benchmarks/kernels.py --check --dtype float32 --out "$OUT_DIR" || status=1
"$PY" - "$OUT_DIR" <<'PY' || status=1
import os, sys
d = sys.argv[1]
for ext in ("json", "md"):  # keep the float32 results when the bf16 run rewrites kernels.*
    os.replace(os.path.join(d, f"kernels.{ext}"), os.path.join(d, f"kernels_f32.{ext}"))
PY
"$PY" benchmarks/kernels.py --check --dtype bfloat16 --out "$OUT_DIR" || status=1
if [ -f "$OUT_DIR/kernels.json" ]; then
  mv "$OUT_DIR/kernels.json" "$OUT_DIR/kernels_bf16.json"
  mv "$OUT_DIR/kernels.md" "$OUT_DIR/kernels_bf16.md"
fi
[ -f "$OUT_DIR/kernels_f32.json" ] && cp "$OUT_DIR/kernels_f32.json" "$OUT_DIR/kernels.json" \
  && cp "$OUT_DIR/kernels_f32.md" "$OUT_DIR/kernels.md"
timeout 240 "$PY" benchmarks/parallel_cells.py --out "$OUT_DIR" || status=1
echo "gpu_check finished with status $status; results in $OUT_DIR"
exit $status
