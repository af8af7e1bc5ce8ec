#!/usr/bin/env bash
# What a session with a GPU runs, in one call of the device tool:
#   bash tools/gpu_session.sh prepare               HERE, before the call (no GPU): the carried folders, below
#   bash tools/gpu_session.sh check                 ON THE GPU, the first call: suite, cold starts, epochs, headline
#   bash tools/gpu_session.sh more                  ON THE GPU, right after (the machine still warm), if time is left:
#                                                   kernel sweep, compute-sanitizer, split-K, profile, accuracy goals
#   bash tools/gpu_session.sh [STEP ...]            single steps: env tests gputests repeat bench-numba bench-cupy
#                                                   sweep sanitizer split-k bench-all bench-train bench-peers bench-kernels bench-tta
#
# prepare refuses a tree that is not its commit (a change to a tracked file, an untracked file: the call carries
# both, and the headline names the commit that ran). It fills three ignored folders that the call carries
# (carry: [".whl", ".kc", ".xdg"], under 64 MiB with the tree): .whl, wheels of this machine's NumPy, numba and numba-cuda for the device's Python 3.12 (numba-cuda
# cannot compile under the image's NumPy 2.5, and the kernel cache's keys name the numba and numba-cuda
# versions: the same ones must run there); .kc, every numba-cuda kernel variant compiled here for compute
# capability 9.0 (deltaprop compile --cc 9.0 --every-kernel), so that the GPU starts warm; .xdg/deltaprop/mnist.npz,
# the MNIST cache (the device has no network).
#
# check, on the GPU (the command of the call: DELTAPROP_COMMIT=<hash of HEAD here> PACK=1 bash tools/gpu_session.sh
# check, timeout_s 600; the device's copy of .git can be stale, so the commit is passed): the environment; whether
# the carried kernels are the ones this GPU would compile (deltaprop compile finds them all); cold starts of
# both GPU backends (a fresh process to the end of its first training step: with every compile cache emptied,
# warm right after, and from the carried cache); the whole suite with --require-gpu on both GPU backends, from a
# copy of the carried cache; the epoch times and accuracies of the headline; and the headline record itself,
# $OUT/<date>-<gpu>-headline.json (tools/headline.py). Every step gets what is left of DEADLINE at most, less
# RESERVED seconds kept for the headline. DEADLINE (560 s) must end well inside the call's limit, which is less
# than timeout_s where the session has less device time left (the reply's limit_s; the lease's budget_left_s):
# the device kills the command at its limit, before $OUT is packed, and only 8 of its files come back. So a call
# that may get less than 600 s passes DEADLINE=<its limit - 40>: more, above all (check and a machine's start
# take 11 or 12 of the session's 15 minutes: more gets what is left, about 3, not 600 s).
# more, the second call if the session has time for it (the same command with more for check, at once: the machine
# stays warm 30 s): the randomized sweep of every kernel against the float64 reference (tests/test_kernels.py,
# tests/test_optim.py and tests/test_dropout.py with SWEEP=16 more shapes of sizes 1..2048, none a tile multiple);
# compute-sanitizer's memcheck, racecheck, synccheck and initcheck on each backend (tools/sanitize_fit.py: the hot
# loops alone, then short fits on the step path and on the fused epoch, every optimizer, and dropout, max-norm and
# sample weights, checked against numpy; --fits short for the three slower tools); numba-cuda's reference-net epoch with split-K off and
# auto ($OUT/split-k.json, tools/split_k_epochs.py); each step's kernels, one by one (tools/profile_step.py);
# the accuracy goals on GOAL_BACKEND (bench/maxout.py --goal, bench/dropout.py), Adam's step cost and accuracy
# (bench/optimizers.py) and 4 fits at once on the GPU (bench/sweep.py --gpu) on both backends; then the other
# three sanitizer tools (memcheck ran first; SANITIZER_TOOLS chooses them all at once instead); and the headline
# again, with the sanitizer's counts. Steps that the deadline leaves no time for are skipped, in this order. PACK=1 packs $OUT into one file (the device returns 8).
# GPU_SESSION_DRY=1 runs check or more on a machine without a GPU: the numpy backend, small sizes, no
# --require-gpu, so that every step's plumbing is tried before device time is spent (tests/test_gpu_session.py).
set -u
OUT=${OUT:-.gpu/out}; mkdir -p "$OUT"
BACKENDS=${BACKENDS:-numba-cuda,cupy}
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=$PWD/.xdg CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/cupy-cache}
PY=${PY:-python3}
DRY=${GPU_SESSION_DRY:-}

if [[ ${1:-} == prepare ]]; then  # here, with the project's venv active
    set -eo pipefail  # pipefail: each compile is piped into tail, whose status set -e would see alone
    clean_commit() {  # HEAD's hash, or a refusal: the call carries the working tree (untracked files too), the
        # headline names the commit that ran, and .kc is compiled from this tree; so it must be that commit
        local head changed
        head=$(git rev-parse --verify -q HEAD) || { echo "gpu_session.sh prepare: $PWD is not a git checkout with a commit; the headline names the commit that ran" >&2; return 1; }
        changed=$(git status --porcelain) || { echo "gpu_session.sh prepare: git status failed in $PWD" >&2; return 1; }
        if [[ -n $changed ]]; then
            printf 'gpu_session.sh prepare: the tree is not commit %s; commit (or move away) first:\n%s\n' "$head" "$changed" >&2
            return 1
        fi
        echo "$head"
    }
    commit=$(clean_commit)  # before the minutes of downloads and compiles
    rm -rf .whl && mkdir -p .whl
    versions=$($PY -c 'import importlib.metadata as m; print(" ".join(f"{d}=={m.version(d)}" for d in ("numpy", "numba", "numba-cuda")))')
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $versions
    rm -rf .kc
    DELTAPROP_KERNEL_CACHE=$PWD/.kc $PY -m deltaprop compile --cc 9.0 --every-kernel --jobs "${JOBS:-2}" | tail -n 1
    DELTAPROP_KERNEL_CACHE=$PWD/.kc $PY -m deltaprop compile --cc 9.0 | tail -n 1  # the reference net: all found
    # the small net's fused epoch (a kernel built for its sizes, so not among every variant): the headline's
    DELTAPROP_KERNEL_CACHE=$PWD/.kc $PY -m deltaprop compile --cc 9.0 --layers 30 --activation sigmoid --loss mse \
        --batch-size 10 --momentum 0 | tail -n 1
    # tools/sanitize_fit.py's net: its fused epochs (built for its sizes, so not among the variants), one per update
    # rule and dtype, which a fit under compute-sanitizer would otherwise compile within the sanitizer's time
    for dtype in float32 float64; do
        for opt in "sgd --momentum 0" "sgd --nesterov" adam adamw "rmsprop --momentum 0.5" "sgd --max-norm 2 --dropout 0.3"; do
            # shellcheck disable=SC2086  # $opt: an optimizer and its options
            DELTAPROP_KERNEL_CACHE=$PWD/.kc $PY -m deltaprop compile --cc 9.0 --inputs 33 --layers 17 --outputs 5 \
                --batch-size 16 --samples 70 --val-split 0 --test-samples 70 --dtype $dtype --optimizer $opt | tail -n 1
        done
    done
    [[ -f .xdg/deltaprop/mnist.npz ]] || $PY -c 'from deltaprop.data import load_mnist; load_mnist()'
    # the cache compressed (55 MB -> 12 MB: the call carries 64 MiB in all), and read back as the loader reads it
    $PY -c 'import numpy as np, os; p = ".xdg/deltaprop/mnist.npz"; d = dict(np.load(p, allow_pickle=False)); np.savez_compressed(p + ".tmp.npz", **d); os.replace(p + ".tmp.npz", p)'
    $PY -c 'from deltaprop.data import load_mnist; load_mnist(download=False)'
    du -sh .whl .kc .xdg
    du -sch --exclude=.git . | tail -n 1  # the tree and the carried folders: under 64 MiB
    now=$(clean_commit)  # and still so after them: an edit or a commit meanwhile is refused
    [[ $now == "$commit" ]] || { echo "gpu_session.sh prepare: HEAD moved from $commit to $now while preparing; run it again" >&2; exit 1; }
    echo "carry: [\".whl\", \".kc\", \".xdg\"]; command: DELTAPROP_COMMIT=$commit PACK=1 bash tools/gpu_session.sh check"
    echo "then, at once if time is left, the same carry and command with more for check and DEADLINE=<budget_left_s - 60>"
    echo "before it (the lease's budget_left_s in check's reply: the device stops the call at what is left, not at 600 s)"
    exit 0
fi

KEPT=${KEPT:-.gpu/kept}
summary=() failed=()  # failed: the steps whose command failed or ran out of time; they make the script's exit status 1
DEADLINE=${DEADLINE:-560}  # seconds for the whole script: a step gets what is left, at most its own limit
step() {  # step NAME SECONDS CMD...: RESERVED seconds of the deadline are kept for the headline's assembly
    # A step's processes are sent SIGTERM at its limit and SIGKILL KILL_AFTER seconds later (one that ignores or
    # outlives SIGTERM would otherwise hold the call past the device's 600 s, and $OUT would come back unpacked).
    local name=$1 limit=$2; shift 2
    local left=$((DEADLINE - ${RESERVED:-40} - SECONDS))
    if ((left < 15)); then summary+=("$name: skipped, past the deadline"); return; fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS
    timeout -k "${KILL_AFTER:-10}" "$limit" "$@" >"$OUT/$name.log" 2>&1; local rc=$?
    ((rc == 0)) || failed+=("$name")
    summary+=("$name: rc=$rc, $((SECONDS - t0)) s :: $(grep -v '^wrote' "$OUT/$name.log" | tail -n 1)")
}
# Wheels carried in .whl (a NumPy that numba-cuda supports, the numba that compiled .kc) go first on the path: a
# step of its own, so that a wheel that does not install is in the summary and the exit status (all would run on
# the image's NumPy, which numba-cuda cannot compile under)
if [[ -z $DRY ]] && compgen -G ".whl/*.whl" >/dev/null; then
    step wheels 120 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
if [[ -z $DRY ]]; then
    $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/install.log" 2>&1 || export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
fi
pytest_logged() {  # pytest_logged LOG ARGS...: the log's first line is the command (tools/headline.py reads it)
    local log=$1; shift
    echo "\$ pytest $*" >"$log"
    $PY -m pytest "$@" >>"$log" 2>&1; local rc=$?
    tail -n 1 "$log"
    return $rc
}
export -f pytest_logged
export PY

check() {  # the first call: what the headline needs, the suite first (a changed kernel is checked before it is timed)
    local gpu=h200 cold=$BACKENDS test_backends=$BACKENDS epochs=(--small-accuracy "$BACKENDS")  # issue 21's 95%
    local tests=(-n "${JOBS:-15}" -p no:cacheprovider --require-gpu -rfEs --timeout=120)
    if [[ -n $DRY ]]; then  # the plumbing on a machine without a GPU
        gpu=cpu-dry cold=numpy test_backends=numpy tests=(-q -p no:cacheprovider tests/test_record.py)
        # no peers: tests/test_headline.py runs each of them on the CPU already
        epochs=(--backends numpy --peers "" --samples 300 --epochs 3 --accuracy numpy --accuracy-epochs 1
                --small-accuracy numpy --small-accuracy-epochs 1)
    fi
    local kc=/tmp/deltaprop-kernels  # the suite's copy of the carried cache: .kc stays as carried for cold-start
    rm -rf "$kc" "$KEPT"; if [[ -d .kc ]]; then cp -r .kc "$kc"; else mkdir -p "$kc"; fi  # KEPT: this check's only
    step env 60 bash -c "nvidia-smi; $PY -m deltaprop info"
    [[ -z $DRY ]] && step carried 120 env DELTAPROP_KERNEL_CACHE="$kc" $PY -m deltaprop compile
    step cold-start 240 $PY tools/headline.py cold-start --backends "$cold" --carried .kc --out "$OUT/cold-start.json"
    step tests 330 env DELTAPROP_TEST_BACKENDS="$test_backends" DELTAPROP_KERNEL_CACHE="$kc" \
        bash -c 'pytest_logged "$0" "$@"' "$OUT/tests-pytest.log" "${tests[@]}" ${PYTEST_ARGS:-}
    # torch.compile in reduce-overhead mode only: max-autotune's autotuning takes minutes of the 10 (headline.md asks
    # for the faster of the two; epochs.json says which mode ran). COMPILE_MODES=reduce-overhead,max-autotune for both.
    step epochs 240 $PY tools/headline.py epochs --compile-modes "${COMPILE_MODES:-reduce-overhead}" "${epochs[@]}" --out "$OUT/epochs.json"
    headline "$gpu"
}

more() {  # the second call, on the same warm machine right after check (its $OUT and kernel copy are still there)
    local gpu=h200 test_backends=$BACKENDS split=($PY tools/split_k_epochs.py) goal=${GOAL_BACKEND:-cupy}
    local sweep=(-q -n "${JOBS:-15}" -p no:cacheprovider --require-gpu -rfE --timeout=120)
    local profile=($PY tools/profile_step.py --backends numba-cuda,cupy,cupy-tf32,cupy-bf16 --optimizers sgd,adam --small
                   --case-timeout 60)
    if [[ -n $DRY ]]; then
        gpu=cpu-dry test_backends=numpy sweep=(-q -p no:cacheprovider -k "sgd and not nesterov")
        split=(env NUMBA_ENABLE_CUDASIM=1 $PY tools/split_k_epochs.py --sizes 40,3,2 --batch-size 8 --samples 24 --epochs 1 --rounds 1)
        profile=($PY tools/profile_step.py --dry --small)
    fi
    local kc=/tmp/deltaprop-kernels
    [[ -d $kc ]] || { if [[ -d .kc ]]; then cp -r .kc "$kc"; else mkdir -p "$kc"; fi; }
    [[ -d $KEPT ]] && cp -rn "$KEPT"/. "$OUT"/  # what check wrote in the call before, on this machine
    step kernel-sweep 120 env DELTAPROP_TEST_BACKENDS="$test_backends" DELTAPROP_KERNEL_CACHE="$kc" \
        DELTAPROP_SWEEP="${SWEEP:-16}" $PY -m pytest "${sweep[@]}" tests/test_kernels.py tests/test_optim.py tests/test_dropout.py
    SANITIZER_TOOLS=${SANITIZER_TOOLS:-memcheck} sanitizer "$kc"  # the other three tools last, if time is left
    step split-k 90 "${split[@]}" --out "$OUT/split-k.json"  # numba-cuda's reference epoch, DELTAPROP_SPLIT_K off and auto
    if [[ -n $DRY ]] && ! $PY -c 'import torch' 2>/dev/null; then
        summary+=("profile: skipped, no PyTorch here (tests/test_profile_step.py runs it where there is)")
    else
        step profile 200 env DELTAPROP_KERNEL_CACHE="$kc" "${profile[@]}" --out "$OUT"  # kernel by kernel, per step
    fi
    if [[ -n $DRY ]]; then  # they train on MNIST; tests/test_bench_maxout.py and test_bench_dropout.py run them small
        summary+=("goals: skipped, dry")
    else  # the issues' accuracy goals on a GPU backend: maxout + dropout >= 98.8%, the dropout net >= 98.6%
        step goals-maxout 150 $PY bench/maxout.py --goal --no-relu --backends "$goal" --machine "$gpu" --out "$OUT"
        step goals-dropout 90 $PY bench/dropout.py --backends "$goal" --steps 10 --repeats 10 --epochs 20 --machine "$gpu" --out "$OUT"
        # Adam's step against SGD's and its 10 epochs (issue 18), and 4 fits at once against 4 in a row (issue 22)
        step goals-optimizers 120 $PY bench/optimizers.py --backends "$BACKENDS" --machine "$gpu" --out "$OUT"
        step goals-sweep 90 $PY bench/sweep.py --gpu --backend "$BACKENDS" --out-dir "$OUT"
    fi
    [[ -z $DRY && -z ${SANITIZER_TOOLS:-} ]] && SANITIZER_TOOLS="racecheck synccheck initcheck" sanitizer "$kc"
    headline "$gpu"
}

headline() {  # headline GPU: the record from what this machine's $OUT holds so far (check's, and more's sanitizer logs)
    RESERVED=0 step headline 60 $PY tools/headline.py assemble --epochs "$OUT/epochs.json" --cold "$OUT/cold-start.json" \
        --tests "$OUT/tests-pytest.log" --sanitizer "$OUT" --out "$OUT/$(date +%F)-$1-headline.json"
}

sanitizer() {  # sanitizer KERNEL_CACHE: compute-sanitizer's four tools on tools/sanitize_fit.py, each GPU backend
    local tool backend
    local tools=${SANITIZER_TOOLS:-memcheck racecheck synccheck initcheck}
    [[ -n $DRY ]] && tools=memcheck
    for tool in $tools; do
        for backend in ${BACKENDS//,/ }; do
            if [[ -n $DRY ]]; then  # no GPU and no compute-sanitizer here: the checked program alone, on numpy
                step "sanitizer-$tool-$backend" 60 $PY tools/sanitize_fit.py --backend numpy
            else
                step "sanitizer-$tool-$backend" "${SANITIZER_SECONDS:-45}" env DELTAPROP_KERNEL_CACHE="$1" \
                    compute-sanitizer --tool "$tool" --print-limit 20 --error-exitcode 1 $PY tools/sanitize_fit.py \
                    --backend "$backend" --fits "$([[ $tool == memcheck ]] && echo all || echo short)"
            fi
        done
    done
}

for s in "${@:-env tests repeat}"; do for s in $s; do case $s in
  check) check ;;
  more) more ;;
  env) step env 60 bash -c "nvidia-smi; $PY -c 'import numpy, numba, cupy, torch; from numba import cuda; import importlib.metadata as m; print(\"numpy\", numpy.__version__, \"numba\", numba.__version__, \"numba-cuda\", m.version(\"numba-cuda\"), \"cupy\", cupy.__version__, \"torch\", torch.__version__, \"cuda runtime\", cupy.cuda.runtime.runtimeGetVersion(), \"driver\", cupy.cuda.runtime.driverGetVersion()); from deltaprop import backends; print(backends.available())'" ;;
  tests) step tests 330 env DELTAPROP_TEST_BACKENDS=${BACKENDS:-numba-cuda,cupy} $PY -m pytest -v -n ${JOBS:-15} -p no:cacheprovider --require-gpu -rfEs --durations=10 --timeout=120 ${PYTEST_ARGS:-} ;;
  sanitizer) sanitizer /tmp/deltaprop-kernels ;;
  gputests) step gputests 300 $PY -m pytest -q -p no:cacheprovider --require-gpu -m gpu -rfEs --timeout=120 ${PYTEST_ARGS:-} ;;
  repeat) for b in ${BACKENDS//,/ }; do step "repeat-$b" 60 $PY tools/repeat_fit.py --backend "$b" --runs ${RUNS:-200}; done ;;
  bench-numba) step bench-numba 120 $PY bench/numba_vs_cublas_torch.py --out "$OUT" ;;
  split-k) step split-k 90 $PY tools/split_k_epochs.py --out "$OUT/split-k.json" ;;
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
# KEPT: a copy of $OUT that outlives the call (the device empties $OUT before each command, and keeps ignored folders
# of the tree while the machine stays warm): more's headline reads check's files from it.
mkdir -p "$KEPT" && cp -r "$OUT"/. "$KEPT"/
if [[ -n ${PACK:-} ]]; then (cd "$OUT" && tar czf gpu-session.tgz --remove-files -- *); fi  # one file: the device returns 8
if ((${#failed[@]})); then echo "gpu_session: ${#failed[@]} step(s) failed: ${failed[*]}" >&2; exit 1; fi
