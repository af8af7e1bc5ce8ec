"""tools/gpu_session.sh check, dry (GPU_SESSION_DRY=1: the numpy backend, small sizes): every step's plumbing,
so that a GPU session's one call does not fail on a typo. What it measures on a GPU is its own business."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import script

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_check_then_more_run_every_step_dry(tmp_path):
    out, kept = tmp_path / "out", tmp_path / "kept"
    env = {**os.environ, "OUT": str(out), "KEPT": str(kept), "GPU_SESSION_DRY": "1", "PY": sys.executable,
           "PYTHONPATH": os.path.abspath(ROOT)}
    done = subprocess.run(["bash", "tools/gpu_session.sh", "check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in summary] == ["env", "cold-start", "tests", "epochs", "headline"], summary
    assert all(": rc=0," in line for line in summary), summary
    (record,) = out.glob("*-cpu-dry-headline.json")
    record = json.loads(record.read_text())
    assert record["tests"]["passed"] > 0 and record["tests"]["failed"] == 0
    cold = json.loads((out / "cold-start.json").read_text())
    assert set(cold) == {"numpy", "errors"} and cold["errors"] == []
    assert (kept / "epochs.json").is_file()  # for more, in the next call

    shutil.rmtree(out)  # the device empties $OUT before each command
    done = subprocess.run(["bash", "tools/gpu_session.sh", "more"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()
    names = [line.split(":")[0] for line in summary]
    assert names == ["kernel-sweep", "sanitizer-memcheck-numba-cuda", "sanitizer-memcheck-cupy", "split-k", "profile",
                     "goals", "headline"], summary
    ran = [line for line in summary if not line.startswith(("goals:", "profile: skipped"))]
    assert all(": rc=0," in line for line in ran), summary
    split = json.loads((out / "split-k.json").read_text())  # on the simulator: its first GEMM splits
    assert split["splits"]["forward 1"] > 1 and set(split["modes"]) == {"off", "auto"}
    assert split["off_epoch_s"] > 0 and split["auto_epoch_s"] > 0 and split["loss_max_relative_difference"] < 1e-5
    (record,) = out.glob("*-cpu-dry-headline.json")  # assembled again from check's files, kept, and more's
    assert json.loads(record.read_text())["tests"]["passed"] > 0


headline = script("tools/headline.py")
OK = "sanitize_fit: {}: every kernel and fit agreed with numpy\n"


def test_sanitizer_counts_read_racecheck_and_a_crashed_runs_errors(tmp_path):
    """The logs as compute-sanitizer writes them: racecheck closes with its RACECHECK SUMMARY line alone (no ERROR
    SUMMARY), and memcheck's out-of-bounds read kills the program (its last line is not sanitize_fit's): its
    errors are a failure, not a figure that was not measured."""
    logs = {
        "racecheck-cupy": "========= COMPUTE-SANITIZER\n" + OK.format("cupy")
                          + "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n",
        "racecheck-numba-cuda": "========= COMPUTE-SANITIZER\n========= Error: Race reported between Write access at "
                                "k+0x2f0\n=========     and Read access at k+0x310 [4 hazards]\n" + OK.format("numba-cuda")
                                + "========= RACECHECK SUMMARY: 2 hazards displayed (1 error, 1 warning)\n",
        "memcheck-cupy": "========= COMPUTE-SANITIZER\n" + "========= Invalid __global__ read of size 4 bytes\n"
                         "=========     at forward+0x1b0\n=========     Address 0x7f2a3c000284 is out of bounds\n" * 2
                         + "========= Program hit cudaErrorLaunchFailure (error 719) due to \"unspecified launch failure\" "
                           "on CUDA API call to cudaStreamSynchronize.\nTraceback (most recent call last):\n"
                           "========= Target application returned an error\n========= ERROR SUMMARY: 3 errors\n",
        "memcheck-numba-cuda": "Traceback (most recent call last):\n========= ERROR SUMMARY: 0 errors\n",  # crashed: no 0
    }
    for name, text in logs.items():
        (tmp_path / f"sanitizer-{name}.log").write_text(text)
    assert headline.sanitizer_counts(str(tmp_path)) == {"racecheck": {"cupy": 0, "numba-cuda": 2},
                                                        "memcheck": {"cupy": 3, "numba-cuda": None}}


# compute-sanitizer as the session calls it, on the numpy backend (no GPU here): FAKE_ERRORS=N errors reported after
# the program ran; FAKE_HANG=1: a program that ignores SIGTERM and outlives any step's limit
FAKE_SANITIZER = r"""#!/usr/bin/env bash
ec=0; while [[ $1 == --* ]]; do [[ $1 == --error-exitcode ]] && ec=$2; shift 2; done
args=("$@"); for i in "${!args[@]}"; do [[ ${args[$i]} == --backend ]] && args[$((i+1))]=numpy; done
echo "========= COMPUTE-SANITIZER"
if [[ -n ${FAKE_HANG:-} ]]; then trap '' TERM; sleep 60; fi
for ((k = 0; k < ${FAKE_ERRORS:-0}; k++)); do echo "========= Invalid __global__ read of size 4 bytes"; done
"${args[@]}"; rc=$?
echo "========= ERROR SUMMARY: ${FAKE_ERRORS:-0} errors"
((${FAKE_ERRORS:-0} > 0 && ec != 0)) && exit $ec
exit $rc
"""
# python, with pip a no-op: the session's installs must not touch this machine's environment
FAKE_PY = f"""#!/usr/bin/env bash
[[ $1 == -m && $2 == pip ]] && exit 0
exec {sys.executable} "$@"
"""


def sanitizer_session(tmp_path, **env):
    """tools/gpu_session.sh sanitizer, not dry (as on the GPU), with the fakes first on PATH."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    for name, text in (("compute-sanitizer", FAKE_SANITIZER), ("py", FAKE_PY)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "OUT": str(out), "KEPT": str(tmp_path / "kept"),
           "PY": "py", "PYTHONPATH": os.path.abspath(ROOT), "SANITIZER_TOOLS": "memcheck", **env}
    env.pop("GPU_SESSION_DRY", None)
    done = subprocess.run(["bash", "tools/gpu_session.sh", "sanitizer"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    summary = [line for line in done.stdout.strip().splitlines() if not line.startswith("wheels:")]  # .whl: a no-op
    return done, summary, out


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_sanitizer_errors_fail_the_step_and_the_session(tmp_path):
    done, summary, out = sanitizer_session(tmp_path)
    assert done.returncode == 0 and all(": rc=0," in line for line in summary), (summary, done.stderr)
    assert headline.sanitizer_counts(str(out))["memcheck"] == {"numba-cuda": 0, "cupy": 0}

    done, summary, out = sanitizer_session(tmp_path, FAKE_ERRORS="2")  # the program itself agreed with numpy
    assert [line.split(":")[0] for line in summary] == ["sanitizer-memcheck-numba-cuda", "sanitizer-memcheck-cupy"]
    assert not any(": rc=0," in line for line in summary), summary
    assert done.returncode != 0, summary
    assert headline.sanitizer_counts(str(out))["memcheck"] == {"numba-cuda": 2, "cupy": 2}


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_step_that_ignores_its_timeout_is_killed_and_the_next_one_runs(tmp_path):
    done, summary, out = sanitizer_session(tmp_path, FAKE_HANG="1", SANITIZER_SECONDS="1", KILL_AFTER="1")
    assert [line.split(":")[0] for line in summary] == ["sanitizer-memcheck-numba-cuda", "sanitizer-memcheck-cupy"]
    assert all(": rc=124," in line or ": rc=137," in line for line in summary), summary
    assert all(int(line.split(", ")[1].split()[0]) < 10 for line in summary), summary  # not the program's 60 s
    assert done.returncode != 0
    assert headline.sanitizer_counts(str(out))["memcheck"] == {"numba-cuda": None, "cupy": None}


def _prepare_in_a_copy(tmp_path, compile_fails=False, change=None):
    """prepare run in a git repository of its own (it writes in its cwd) holding tools/gpu_session.sh and the
    project's .gitignore, committed; PY a fake whose pip and -c snippets succeed and which logs each call to
    py.log; ``change`` then edits the tree: "tracked" a committed file, "untracked" a new one, "no-git" removes
    the repository, "commit-meanwhile" has each compile commit. Returns the finished process and HEAD's hash."""
    (tmp_path / "tools").mkdir()
    shutil.copy(os.path.join(ROOT, "tools", "gpu_session.sh"), tmp_path / "tools")
    shutil.copy(os.path.join(ROOT, ".gitignore"), tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    for args in (["init", "-q"], ["add", "tools", ".gitignore"], ["commit", "-qm", "the tree"]):
        subprocess.run([*git, *args], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    fake = tmp_path / ".gpu" / "py"  # ignored, as the venv's python is
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\necho "$*" >> .gpu/py.log\nmkdir -p .kc .xdg\n'
                    + ('[[ "$1 $2 $3" == "-m deltaprop compile" ]] && { echo "compile: failed" >&2; exit 1; }\n'
                       if compile_fails else "")
                    + ('[[ "$1 $2 $3" == "-m deltaprop compile" ]] && git -c user.name=t -c user.email=t@t commit '
                       '-q --allow-empty -m meanwhile\n' if change == "commit-meanwhile" else "") + "exit 0\n")
    fake.chmod(0o755)
    if change == "tracked":
        (tmp_path / ".gitignore").write_text("changed\n")
    elif change == "untracked":
        (tmp_path / "new_module.py").write_text("")
    elif change == "no-git":
        shutil.rmtree(tmp_path / ".git")
    done = subprocess.run(["bash", "tools/gpu_session.sh", "prepare"], cwd=tmp_path, env={**os.environ, "PY": str(fake)},
                          capture_output=True, text=True, timeout=60)
    return done, head


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("git") is None, reason="needs bash and git")
def test_prepare_stops_when_a_compile_fails(tmp_path):
    """prepare pipes each deltaprop compile into tail: without pipefail, set -e saw tail's status, and a failed
    compile went on to print the call's command as if .kc were complete (the GPU would compile at run time)."""
    done, _ = _prepare_in_a_copy(tmp_path, compile_fails=True)
    assert done.returncode != 0 and "carry:" not in done.stdout, (done.stdout, done.stderr)
    assert "-m deltaprop compile" in (tmp_path / ".gpu" / "py.log").read_text()  # it got as far as compiling


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("git") is None, reason="needs bash and git")
def test_prepare_prints_the_commit_of_a_clean_tree(tmp_path):
    done, head = _prepare_in_a_copy(tmp_path)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"command: DELTAPROP_COMMIT={head} PACK=1 bash tools/gpu_session.sh check" in done.stdout


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("git") is None, reason="needs bash and git")
@pytest.mark.parametrize("change, says", [("tracked", "M .gitignore"), ("untracked", "?? new_module.py"),
                                          ("no-git", "not a git checkout")])
def test_prepare_refuses_a_tree_that_is_not_its_commit_before_any_work(tmp_path, change, says):
    """The call carries the working tree, untracked files included, and the headline names the commit that ran
    (prepare printed HEAD's hash for a changed tree, and an empty one outside git): refused before the minutes
    of compiling, with what differs."""
    done, _ = _prepare_in_a_copy(tmp_path, change=change)
    assert done.returncode != 0 and "carry:" not in done.stdout, (done.stdout, done.stderr)
    assert "gpu_session.sh prepare:" in done.stderr and says in done.stderr, done.stderr
    assert not (tmp_path / ".gpu" / "py.log").exists()  # nothing downloaded or compiled


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("git") is None, reason="needs bash and git")
def test_prepare_refuses_a_commit_made_while_it_compiles(tmp_path):
    done, head = _prepare_in_a_copy(tmp_path, change="commit-meanwhile")
    assert done.returncode != 0 and "carry:" not in done.stdout, (done.stdout, done.stderr)
    assert f"HEAD moved from {head} to " in done.stderr, done.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_wheels_that_do_not_install_fail_the_session(tmp_path):
    """The carried wheels (the NumPy numba-cuda needs, the numba that compiled .kc) failing to install left every
    step on the image's NumPy, and nothing in the summary or the exit status said so."""
    (tmp_path / "tools").mkdir()
    shutil.copy(os.path.join(ROOT, "tools", "gpu_session.sh"), tmp_path / "tools")  # its cwd holds .whl
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "numpy-2.0.0-cp312-cp312-manylinux_2_17_x86_64.whl").write_text("")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, text in (("py", '#!/usr/bin/env bash\n[[ " $* " == *" --target "* ]] && { echo "ERROR: not a supported '
                               'wheel on this platform" >&2; exit 1; }\nexit 0\n'), ("nvidia-smi", "#!/bin/sh\n")):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "PY": "py", "OUT": str(tmp_path / "out"),
           "KEPT": str(tmp_path / "kept")}
    env.pop("GPU_SESSION_DRY", None)
    done = subprocess.run(["bash", "tools/gpu_session.sh", "env"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    summary = done.stdout.strip().splitlines()
    assert summary[0].startswith("wheels: rc=1,") and "not a supported wheel" in summary[0], summary
    assert summary[1].startswith("env: rc=0,"), summary  # the steps still run
    assert done.returncode != 0


def test_a_suite_that_stops_at_collection_counts_as_failed(tmp_path):
    """pytest's closing line when a test file does not import names errors only: the headline's tests read it as
    not run (all null) instead of failed."""
    log = tmp_path / "tests-pytest.log"
    log.write_text("$ pytest -n 15 --require-gpu\n=========== short test summary info ===========\n"
                   "ERROR tests/test_cupy.py - ImportError: numpy.core.multiarray failed to import\n"
                   "!!!!!!!! Interrupted: 2 errors during collection !!!!!!!!\n"
                   "============================== 2 errors in 7.31s ==============================\n")
    assert headline.tests_summary(str(log)) == {"command": "pytest -n 15 --require-gpu", "passed": 0, "failed": 2,
                                                "skipped": 0, "seconds": 7.31}


def test_epochs_exit_status_says_a_peer_failed(tmp_path, monkeypatch):
    """A peer that fails is in the epochs JSON's errors (the others' figures kept), and now in the exit status, as
    cold-start's errors are: the session's summary said rc=0 for a headline with a peer's figures missing."""
    def fails(peer, net, *args):
        raise RuntimeError(f"{peer}: out of memory")

    monkeypatch.setattr(headline, "peer_epochs", fails)
    monkeypatch.setattr(headline.importlib.util, "find_spec", lambda name: object())  # as if installed
    out = tmp_path / "epochs.json"
    rc = headline.main(["epochs", "--backends", "numpy", "--peers", "jax_jit", "--samples", "300", "--epochs", "3",
                        "--accuracy", "", "--step-path", "", "--out", str(out)])
    epochs = json.loads(out.read_text())
    assert set(epochs["nets"]["reference"]) == {"numpy"} and len(epochs["errors"]) == 4  # 3 precisions + small
    assert rc == 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_hung_step_leaves_the_headline_inside_the_deadline(tmp_path):
    """more, dry, its first step hung (a pytest that ignores SIGTERM): it is killed at what the deadline leaves it,
    the steps after it are skipped past the deadline, the headline is still assembled and packed before DEADLINE
    (plus KILL_AFTER) has passed, and the exit status says a step failed."""
    import tarfile

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "py").write_text(f'#!/usr/bin/env bash\n[[ "$1 $2" == "-m pytest" ]] && {{ trap "" TERM; sleep 60; }}\n'
                             f'exec {sys.executable} "$@"\n')
    (bin_ / "py").chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "OUT": str(out), "KEPT": str(tmp_path / "kept"),
           "GPU_SESSION_DRY": "1", "PY": "py", "PYTHONPATH": os.path.abspath(ROOT), "DEADLINE": "56", "KILL_AFTER": "1",
           "PACK": "1"}
    done = subprocess.run(["bash", "-c", 'tools/gpu_session.sh more; echo "rc=$? seconds=$SECONDS"'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    *summary, last = done.stdout.strip().splitlines()
    assert summary[0].startswith("kernel-sweep: rc=137,"), summary
    assert all("skipped" in line for line in summary[1:-1]) and summary[-1].startswith("headline: rc=0,"), summary
    rc, seconds = (int(part.split("=")[1]) for part in last.split())
    assert rc == 1 and seconds <= 56 + 1, last
    with tarfile.open(out / "gpu-session.tgz") as tgz:
        assert any(name.endswith("-cpu-dry-headline.json") for name in tgz.getnames()), tgz.getnames()


def test_the_sanitizer_run_covers_both_paths_and_every_optimizer(monkeypatch):
    """What compute-sanitizer watches: the step path and the fused epoch (which a net this small takes on a GPU under
    auto, so a run on auto alone never saw the graph path), each optimizer, and the regularisers' kernels; the short
    set that the slower tools run keeps both paths and the regularised fit."""
    from deltaprop import optim

    fit = script("tools/sanitize_fit.py")
    assert fit.PATHS == ("off", "auto")
    assert {name for name, _, _ in fit.FITS} == set(optim.NAMES)
    assert any(settings.get("nesterov") for _, settings, _ in fit.FITS)
    regularised = [extra for _, _, extra in fit.FITS if extra]
    assert regularised == [{"dropout": 0.3, "max_norm": 2.0, "weights": True, "validation": True}]
    assert [fit.FITS[i][2] for i in fit.SHORT][-1] == regularised[0]
    seen = []
    real = fit.MLP.fit

    def spy(self, *args, **kwargs):
        seen.append((os.environ.get("DELTAPROP_FUSED"), self.backend_name))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(fit.MLP, "fit", spy)
    monkeypatch.setenv("DELTAPROP_FUSED", "off")  # restored after the test: the tool sets it for each path
    assert fit.main(["--backend", "numpy", "--fits", "short"]) == 0
    assert seen == [(path, "numpy") for _ in ("float32", "float64") for path in fit.PATHS for _ in fit.SHORT
                    for _ in (0, 1)]
