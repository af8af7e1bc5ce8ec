"""The README's code blocks, run so that they cannot rot.

Each ```python block runs as pasted, alone (its own imports and data), in a temporary working
directory. Only the data is smaller: DELTAPROP_DATA names a folder of MNIST IDX files holding
300 training and 100 test digits of tests/data/mnist_subset.npz, so the block's ``load_mnist()``
reads those (a named folder is the only source it then reads: no cache, no download), and
DELTAPROP_BACKEND=numpy makes ``backend="auto"`` the CPU, so the blocks take seconds everywhere.

In the shell blocks, every ``deltaprop ...`` command, the arguments after the image in
``docker run ... deltaprop ...`` and every ``python -m bench ...`` are parsed by the command's
own argument parser without running anything; ``deltaprop info`` runs. Extras named in ``pip
install`` lines must exist in pyproject.toml, and a wheel's file name must carry its version.
The last tests feed broken blocks to the same checks, which must fail.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import mnist_files as mf
from deltaprop import cli
from deltaprop.bench.cli import parse as parse_bench

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


SHELL_FENCES = ("", "sh", "bash", "shell")


def blocks(text: str, languages) -> list:
    """(line number, code) of each fenced block whose language is one of ``languages``."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(2)) for m in FENCE.finditer(text) if m.group(1) in languages]


def commands(code: str) -> list:
    """The block's commands as token lists: backslash continuations joined, comments dropped."""
    return [tokens for line in code.replace("\\\n", " ").splitlines() if (tokens := shlex.split(line, comments=True))]


def program_argv(tokens: list):
    """("deltaprop" or "bench", its arguments) for a command that runs one of them, else None."""
    if "|" in tokens:
        raise AssertionError(f"{shlex.join(tokens)}: a pipe; put alternatives on separate lines")
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):  # VAR=value before the command
        tokens = tokens[1:]
    if tokens[:1] == ["deltaprop"]:
        args = tokens[1:]
        return ("bench", args[1:]) if args[:1] == ["bench"] else ("deltaprop", args)
    if tokens[:3] == ["python", "-m", "bench"]:
        return "bench", tokens[3:]
    if tokens[:2] == ["docker", "run"] and "deltaprop" in tokens:
        args = tokens[tokens.index("deltaprop") + 1:]
        return "deltaprop", args or ["train"]  # the image's default command
    return None


def check_command(tokens: list, capsys) -> None:
    """Parse a deltaprop or bench command line (run it when it is `deltaprop info`); fail with argparse's message."""
    which = program_argv(tokens)
    if which is None:
        return
    program, argv = which
    try:
        if program == "bench":
            parse_bench(argv)
        elif argv == ["info"]:
            assert cli.main(argv) == 0
        else:
            cli.build_parser().parse_args(argv)
    except SystemExit:
        raise AssertionError(f"{shlex.join(tokens)}: {capsys.readouterr().err.strip()}") from None


def extras() -> set:
    section = PYPROJECT.split("[project.optional-dependencies]")[1].split("\n[")[0]
    return set(re.findall(r"^([a-z0-9_-]+)\s*=", section, re.M))


def version() -> str:
    return re.search(r'^version = "([^"]+)"', PYPROJECT, re.M).group(1)


def check_pip(tokens: list) -> None:
    """The extras a `pip install` line names exist; a wheel it installs is this version's."""
    if tokens[:2] != ["pip", "install"]:
        return
    for arg in tokens[2:]:
        for group in re.findall(r"\[([^\]]+)\]$", arg):
            unknown = set(group.split(",")) - extras()
            assert not unknown, f"{shlex.join(tokens)}: no extra {sorted(unknown)} in pyproject.toml"
        if ".whl" in arg:
            assert f"deltaprop-{version()}-" in arg, f"{shlex.join(tokens)}: the wheel of version {version()} is named otherwise"


@pytest.fixture
def readme_env(tmp_path, monkeypatch):
    """A working directory, a small MNIST in DELTAPROP_DATA, an empty cache and the NumPy backend."""
    monkeypatch.setenv("DELTAPROP_DATA", str(mf.write_idx_dir(tmp_path / "mnist", mf.subset(300, 100))))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DELTAPROP_BACKEND", "numpy")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


def run_python(line: int, code: str) -> None:
    exec(compile(code, f"README.md, block at line {line}", "exec"), {"__name__": "__readme__"})


PYTHON = blocks(README, ("python",))
SHELL = blocks(README, SHELL_FENCES)


def test_readme_has_blocks():
    """The extraction finds what the README holds (a changed fence would otherwise test nothing)."""
    assert len(PYTHON) >= 3 and len(SHELL) >= 6
    parsed = [program_argv(tokens) for _, code in SHELL for tokens in commands(code)]
    assert sum(p is not None for p in parsed) >= 10


@pytest.mark.parametrize("line, code", PYTHON, ids=[f"line{line}" for line, _ in PYTHON])
def test_python_block_runs(line, code, readme_env, capsys):
    run_python(line, code)
    assert capsys.readouterr().out.strip(), "each block prints what it shows"


@pytest.mark.parametrize("line, code", SHELL, ids=[f"line{line}" for line, _ in SHELL])
def test_shell_block_parses(line, code, capsys):
    for tokens in commands(code):
        check_command(tokens, capsys)
        check_pip(tokens)


def test_ci_runs_the_readmes_test_command():
    """The pytest line of the README's install-and-test block is a command of .ci/run, as it is."""
    (tests,) = [code for _, code in blocks(README, SHELL_FENCES) if 'pip install -e ".[test]"' in code]
    (command,) = [line for line in tests.splitlines() if "pytest" in line]
    ci = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command.strip() in ci, f"{command!r} is not a line of .ci/run"


# The checks above, on broken blocks: each must fail.
@pytest.mark.parametrize("code", [
    "deltaprop train --dataset xor | --dataset digits | --data mine.npz",
    "deltaprop train --epochs ten",
    "deltaprop train --no-such-flag",
    "deltaprop trian",
    "docker run --gpus all deltaprop train --layers 0",
    "python -m bench kernels nosuchsuite",
])
def test_broken_command_fails(code, capsys):
    with pytest.raises(AssertionError):
        for tokens in commands(code):
            check_command(tokens, capsys)


@pytest.mark.parametrize("code", ['pip install ".[cuda11]"', "pip install dist/deltaprop-0.0.1-py3-none-any.whl"])
def test_broken_pip_line_fails(code):
    with pytest.raises(AssertionError):
        for tokens in commands(code):
            check_pip(tokens)


@pytest.mark.parametrize("code", [
    "model = MLP([2, 2])",  # MLP not imported
    "from deltaprop.data import load_mnist\ndata = load_mnist()\ndata.X_train.fit()",
])
def test_broken_python_block_fails(code, readme_env):
    with pytest.raises((NameError, AttributeError)):
        run_python(1, code)
