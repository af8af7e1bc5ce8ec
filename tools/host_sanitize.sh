#!/usr/bin/env bash
# compute-sanitizer's questions asked of the CuPy backend's CUDA C without a GPU: the kernels run on the host
# emulation (tests/emulated_cuda.py, tests/host/cuda_host.h) through the emulated tests (the kernels against their
# replacements, every contract method, whole fits step by step and through the recorded graph, the fused epoch).
# They run once, built with AddressSanitizer and UndefinedBehaviorSanitizer (memcheck: an out-of-bounds or misaligned
# access, an overflow, a use after free stops the run), with the scheduler running each block's fibers, and the
# blocks, in a fresh shuffled order every round (racecheck, in part: the kernels use no atomics, so a result that
# depends on the order is a race, a missing barrier, and the tests' comparisons fail). initcheck's part is in every
# run of the emulation: shared memory starts each block as NaN bytes; and synccheck's: a barrier that part of a block
# skips, or a warp shuffle with lanes gone, stops the run (tests/host/cuda_host.h).
# First a canary: an out-of-bounds read that the sanitizer must catch, or the run would prove nothing.
#   bash tools/host_sanitize.sh [pytest arguments]          (CI runs it; under a minute on 2 cores; needs g++)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
CXX=$(command -v g++) || { echo "host_sanitize: needs g++ (its AddressSanitizer runtime)" >&2; exit 1; }
TESTS=(tests/test_cuda_host.py tests/test_cupy_emulated.py)
preload="$($CXX -print-file-name=libasan.so) $($CXX -print-file-name=libubsan.so)"
for lib in $preload; do
    [[ -f $lib ]] || { echo "host_sanitize: g++ has no $lib (its sanitizer runtimes: libasan, libubsan)" >&2; exit 1; }
done
sanitized=(env DELTAPROP_HOST_CXXFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
           LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0:detect_stack_use_after_return=0
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
canary='import sys; sys.path.insert(0, "tests"); import numpy as np, emulated_cuda as e
x, m = e.DevNumpy().zeros(9990), e.DevNumpy().zeros(10000)
e.dropout_kernels(np.float64)["mul_mask"]((40,), (256,), (x, m, np.int64(10000)))  # 10 elements past x
print("not caught")'
caught=$("${sanitized[@]}" "$PY" -c "$canary" 2>&1 || true)
if grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" <<<"$caught"; then
    echo "host_sanitize: the canary's out-of-bounds read was caught"
else
    echo "host_sanitize: AddressSanitizer missed the canary: this run would prove nothing" >&2; exit 1
fi
echo "host_sanitize: AddressSanitizer and UndefinedBehaviorSanitizer, shuffled order"
"${sanitized[@]}" DELTAPROP_HOST_ORDER=shuffle "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" "$@" 2>&1 \
    | grep -v "ASan doesn't fully support makecontext"
