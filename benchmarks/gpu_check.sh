#!/usr/bin/env bash
# GPU check for the fused kernels: the `gpu` tests, the weightless benchmark (`bench_kernels.py --weightless`:
# packed/seeded inference at batch 1/16/256 x 4096^2/8192^2 vs cuBLAS bf16, seeded vs stored fused step), then
# `bench_kernels.py --quick`, in under 8 minutes on one H100 (torch 2.11, Triton 3.6, no network, no installs
# from a registry). Writes everything under $OUT (default ./gpu_check_out): env.txt, gpu_tests.txt,
# weightless_tests.txt, bench_weightless.{txt,csv}, bench_kernels.{txt,csv,png}.
#
#   bash benchmarks/gpu_check.sh            # from the repository root (or anywhere: it cd's there)
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
DEADLINE=$((SECONDS + 460))  # wall-clock guard: every phase gets at most what is left of 460 s

left() { local s=$((DEADLINE - SECONDS)); [ "$s" -gt "$1" ] && echo "$1" || echo $((s > 5 ? s : 5)); }

# The source tree on PYTHONPATH makes `import strongticket` work; strongticket.kernels needs the package_dir
# mapping of an install, so try an offline editable install (no deps, no build isolation: nothing downloaded)
# and otherwise fall back to the top-level `kernels` package (ops._kernels imports either).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import strongticket.kernels" 2>/dev/null; then
    timeout "$(left 60)" "$PY" -m pip install -e . --no-deps --no-build-isolation -q >"$OUT/pip.log" 2>&1 \
        || echo "offline editable install failed (see pip.log): using the source tree on PYTHONPATH"
fi

{
    date -u
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
    nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,memory.used --format=csv 2>/dev/null
} | tee "$OUT/env.txt"

status=0
echo "== gpu tests"
timeout "$(left 150)" "$PY" -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== weightless tests (compiled kernels vs float64 / strongticket.random)"
timeout "$(left 90)" "$PY" -m pytest -q -p no:cacheprovider tests/test_weightless.py 2>&1 | tee "$OUT/weightless_tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== bench_kernels.py --weightless --quick"
budget=$(left 110)
timeout "$budget" "$PY" benchmarks/bench_kernels.py --weightless --quick --out "$OUT" --budget-s $((budget * 2 / 3)) \
    2>&1 | tee "$OUT/bench_weightless.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== bench_kernels.py --quick"
budget=$(left 300)
timeout "$budget" "$PY" benchmarks/bench_kernels.py --quick --skip-weightless --out "$OUT" \
    --budget-s $((budget * 2 / 3)) 2>&1 \
    | tee "$OUT/bench_kernels.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "gpu_check done in ${SECONDS} s, status ${status}; outputs in $OUT"
exit "$status"
