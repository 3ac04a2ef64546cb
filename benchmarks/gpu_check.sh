#!/usr/bin/env bash
# GPU check for the fused kernels, in under 8 minutes on one H100/H200 (torch 2.11, Triton 3.6, no network, no
# installs from a registry). Phases, each cut to what is left of a 460 s budget:
#   1. `pytest -m gpu`: compiled kernels vs float64 at the default tiles, radix select on 10^6 scores, and a whole
#      fused search step (selection, forward, backward, ScoreSGD in the dS epilogue) captured in a CUDA graph and
#      run under torch.cuda.set_sync_debug_mode("error") (no host synchronisation)
#   2. the kernel test files on CUDA: selection (4 launches, cross-CTA ordering), 64-bit offsets and grid limits,
#      weightless kernels vs strongticket.random
#   3. `bench kernels --static`: compiled resources and roofline floors, with the measured time of every kernel
#      of the fused step beside them (this GPU)
#   4. `bench kernels --weightless --quick`: packed/seeded inference vs cuBLAS bf16, seeded vs stored step
#   5. `bench kernels --quick`: the whole step vs the original sort + W⊙M + F.linear way and our reference
# Everything goes under $OUT (default ./gpu_check_out): env.txt, gpu_tests.txt, device_tests.txt,
# static_report.{txt,csv}, bench_weightless.{txt,csv}, bench_kernels.{txt,csv,png}.
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
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"
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
echo "== 1. gpu tests (compiled kernels, CUDA-graph capture and sync-free whole step)"
timeout "$(left 150)" "$PY" -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 2. kernel tests on CUDA (selection, 64-bit offsets, grids, weightless)"
timeout "$(left 90)" "$PY" -m pytest -q -p no:cacheprovider tests/test_select.py tests/test_kernel_limits.py \
    tests/test_weightless.py 2>&1 | tee "$OUT/device_tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 3. bench kernels --static (compiled resources, floors, measured times)"
timeout "$(left 70)" "$PY" benchmarks/bench_kernels.py --static --out "$OUT" 2>&1 | tee "$OUT/static_report.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 4. bench_kernels.py --weightless --quick"
budget=$(left 80)
timeout "$budget" "$PY" benchmarks/bench_kernels.py --weightless --quick --out "$OUT" --budget-s $((budget * 2 / 3)) \
    2>&1 | tee "$OUT/bench_weightless.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 5. bench_kernels.py --quick"
budget=$(left 300)
timeout "$budget" "$PY" benchmarks/bench_kernels.py --quick --skip-weightless --out "$OUT" \
    --budget-s $((budget * 2 / 3)) 2>&1 \
    | tee "$OUT/bench_kernels.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "gpu_check done in ${SECONDS} s, status ${status}; outputs in $OUT"
exit "$status"
