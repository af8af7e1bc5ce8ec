#!/usr/bin/env bash
# What a session with a GPU runs (issues 4, 5, 6), in one call of the device tool:
#   bash tools/gpu_session.sh [STEP ...]     steps: env tests gputests repeat bench-numba bench-cupy sweep
#                                            bench-all bench-train bench-peers bench-kernels bench-tta
# Logs go to $OUT (or .gpu/out here); the summary of each step is printed last.
# The MNIST cache travels as .xdg/deltaprop/mnist.npz (carry .xdg): the device has no network.
# The device's copy of .git can be stale: put DELTAPROP_COMMIT=<hash of HEAD here> in the command itself,
# so that the results name the commit that ran (git rev-parse on the device named an older one, 2026-11-22).
set -u
OUT=${OUT:-.gpu/out}; mkdir -p "$OUT"
BACKENDS=${BACKENDS:-numba-cuda,cupy}
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=$PWD/.xdg CUPY_CACHE_DIR=/tmp/cupy-cache
PY=${PY:-python3}
# Wheels carried in .whl (e.g. a NumPy that numba-cuda supports) go first on the path.
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >"$OUT/wheels.log" 2>&1
    export PYTHONPATH=/tmp/site
fi
$PY -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/install.log" 2>&1 || export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
summary=()
DEADLINE=${DEADLINE:-540}  # seconds for the whole script: a step gets what is left, at most its own limit
step() {  # step NAME SECONDS CMD...
    local name=$1 limit=$2; shift 2
    local left=$((DEADLINE - SECONDS))
    if ((left < 15)); then summary+=("$name: skipped, past the deadline"); return; fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; local rc=$?
    summary+=("$name: rc=$rc, $((SECONDS - t0)) s :: $(grep -v '^wrote' "$OUT/$name.log" | tail -n 1)")
}
for s in "${@:-env tests repeat}"; do for s in $s; do case $s in
  env) step env 60 bash -c "nvidia-smi; $PY -c 'import numpy, numba, cupy, torch; from numba import cuda; import importlib.metadata as m; print(\"numpy\", numpy.__version__, \"numba\", numba.__version__, \"numba-cuda\", m.version(\"numba-cuda\"), \"cupy\", cupy.__version__, \"torch\", torch.__version__, \"cuda runtime\", cupy.cuda.runtime.runtimeGetVersion(), \"driver\", cupy.cuda.runtime.driverGetVersion()); from deltaprop import backends; print(backends.available())'" ;;
  tests) step tests 330 env DELTAPROP_TEST_BACKENDS=${BACKENDS:-numba-cuda,cupy} $PY -m pytest -v -n ${JOBS:-15} -p no:cacheprovider --require-gpu -rfEs --durations=10 --timeout=120 ${PYTEST_ARGS:-} ;;
  gputests) step gputests 300 $PY -m pytest -q -p no:cacheprovider --require-gpu -m gpu -rfEs --timeout=120 ${PYTEST_ARGS:-} ;;
  repeat) for b in ${BACKENDS//,/ }; do step "repeat-$b" 60 $PY tools/repeat_fit.py --backend "$b" --runs ${RUNS:-200}; done ;;
  bench-numba) step bench-numba 120 $PY bench/numba_vs_cublas_torch.py --out "$OUT" ;;
  bench-cupy) step bench-cupy 120 $PY bench/cupy_vs_torch.py --out "$OUT" ;;
  sweep) IFS=, read -ra tiles <<<"${TILES:-128 128 8 8 8,128 128 8 8 8 2,64 64 16 4 4,64 64 16 4 4 3,128 128 16 8 8,128 64 8 8 4,32 32 16 2 2}"
         for t in "${tiles[@]}"; do
           step "sweep-${t// /_}" 60 $PY bench/numba_vs_cublas_torch.py --only gemm --sizes 4096 --repeat 5 --tiles $t --out /tmp/sweep; done ;;
  bench-all) step bench-all 560 $PY -m bench --out "$OUT" ${BENCH_ARGS:-} ;;
  bench-train|bench-peers|bench-kernels|bench-tta)  # one suite of `python -m bench`, results named by it
         step $s 200 $PY -m bench ${s#bench-} --backends ${BENCH_BACKENDS:-numba-cuda,cupy,numpy} --out "$OUT" \
              --machine "${MACHINE:-gpu}-${s#bench-}" ${BENCH_ARGS:-} ;;
  *) echo "unknown step $s"; exit 2 ;;
esac; done; done
printf '%s\n' "${summary[@]}"
if [[ -n ${PACK:-} ]]; then (cd "$OUT" && tar czf gpu-session.tgz --remove-files -- *); fi  # one file: the device returns 8
