"""Atomic file writes: a temporary file in the same folder, renamed into place, so a reader never sees half a file.

The temporary file is created with mode 0666 less the umask (as ``open`` would make it), not
mkstemp's 0600, so a shared cache or volume stays readable by whom the user's umask allows; a file
written over keeps its own permissions, as ``open`` would leave them.
A symlink is followed (the file it names is replaced, not the link, and keeps its permissions), and a
target that exists but is not a regular file (a device such as /dev/null, a named pipe, a terminal), or
that is named under /dev or /proc (/dev/stdout redirected to a file), is written through and appended to:
renaming over it would replace the device or pipe by a file, or unlink the file a shell redirected to. One
that names this process's own descriptor (/dev/stdout, /proc/self/fd/N) is written on that descriptor, at its
offset: a shell's `> out.txt` opens the file without O_APPEND, and a second open would write from offset 0.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import stat
import sys
import time

TEMP_PREFIX, TEMP_SUFFIX = ".deltaprop-", ".tmp"
# how long a shared cache's temporary file of a pid that is not here stays unchanged before it is taken for a killed
# write's: a live write (of another machine or container) changes it every few seconds at most
SHARED_IDLE_S = 3600.0


def cache_home() -> str:
    """$XDG_CACHE_HOME where it is an absolute path (the XDG spec ignores a relative one), else ~/.cache."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return base if os.path.isabs(base) else os.path.join(os.path.expanduser("~"), ".cache")


def atomic_write(path, write, binary=True) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, flush it to disk, then rename it to ``path``; an
    existing file's permissions are kept. A special target (``is_special``) is written through, appended to, or
    on this process's own descriptor when it names one (``own_descriptor``)."""
    path = os.fspath(path)
    if is_special(path):
        fd = own_descriptor(path)
        if fd is not None:  # /dev/stdout: a shell's `> out.txt` holds it without O_APPEND, at an offset of its own
            _write_to_descriptor(fd, write, binary)
            return
        with open(path, "ab" if binary else "a", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        return
    path = os.path.realpath(path)  # a symlink's target is replaced, not the link
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # as open would leave them
    except OSError:
        mode = None
    folder = os.path.dirname(path)
    fd, tmp = create_temp(folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_special(path) -> bool:
    """Whether ``path`` (its symlinks followed) exists and is neither a regular file nor a directory (a device, a
    named pipe, a socket), or is an existing file under /dev or /proc as given (/dev/stdout, /proc/self/fd/1: a
    stream a shell may have pointed at a regular file, which a rename would unlink): a write goes through to it."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    if os.path.abspath(os.fspath(path)).startswith(("/dev/", "/proc/")):
        return not stat.S_ISDIR(mode)
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def own_descriptor(path) -> int | None:
    """N when ``path`` names this process's own descriptor N (/dev/stdout 1, /dev/stderr 2, /dev/fd/N,
    /proc/self/fd/N, /proc/<pid>/fd/N) and N is open; else None."""
    p = os.path.abspath(os.fspath(path))
    n = {"/dev/stdout": "1", "/dev/stderr": "2"}.get(p)
    for prefix in ("/dev/fd/", "/proc/self/fd/", f"/proc/{os.getpid()}/fd/"):
        if n is None and p.startswith(prefix):
            n = p[len(prefix):]
    if n is None or not n.isdigit():
        return None
    try:
        os.fstat(int(n))
    except OSError:
        return None
    return int(n)


def _write_to_descriptor(fd: int, write, binary: bool) -> None:
    """``write(f)`` into memory, then the bytes onto descriptor ``fd`` at its own offset (after what Python's
    stdout or stderr holds for it): a second open of /dev/stdout would start at offset 0 of a file the shell
    opened with `>`, and the process's later output would overwrite it."""
    buffer = io.BytesIO() if binary else io.StringIO()
    write(buffer)
    data = buffer.getvalue() if binary else buffer.getvalue().encode("utf-8")
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.fileno() == fd:
                stream.flush()
        except (AttributeError, OSError, ValueError):  # a stream without a descriptor (pytest's capture)
            pass
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def file_type(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words: "a directory", "a named pipe", ..., "a regular file"."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def create_temp(folder: str):
    """(fd, path) of a new, empty file in ``folder``, made with O_EXCL and mode 0666 & ~umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def stale_temp(name: str, own: bool = True) -> bool:
    """Whether ``name`` is a temporary file of a write that can no longer finish: its process (the pid in the name)
    is gone, or is this one (between its writes; ``own=False`` where another of its threads may be writing). A name
    without a pid, or of a live process, is not stale."""
    found = re.fullmatch(rf"{re.escape(TEMP_PREFIX)}(\d+)-[0-9a-z]+{re.escape(TEMP_SUFFIX)}", name)
    if found is None:
        return False
    pid = int(found[1])
    if pid == os.getpid():
        return own
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: another user's live process
        return False
    return False


def remove_stale_temps(folder: str, shared: bool = False) -> None:
    """Remove the temporary files in ``folder`` of writes that can no longer finish (``stale_temp``): a process
    killed while writing leaves its temporary file, which nothing else would ever remove. ``shared``: a cache that
    other machines or containers (other pid namespaces) may fill too, and other threads of this process: only
    those of other pids, unchanged for SHARED_IDLE_S (a pid that is not here may be another's live writer)."""
    own, idle_s = (False, SHARED_IDLE_S) if shared else (True, 0.0)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    now = time.time()
    for name in names:
        if stale_temp(name, own):
            path = os.path.join(folder, name)
            try:
                if idle_s and now - os.lstat(path).st_mtime < idle_s:
                    continue
                os.remove(path)
            except OSError:  # removed by another process meanwhile, or a folder we may not change
                pass


def check_writable(path, flag: str) -> None:
    """Raise ValueError naming ``flag`` unless a file can be written at ``path``: its folder exists and a
    file can really be made in it (a probe file, removed again), and its name is a file name the folder allows.
    A symlink is checked at the file it names; a device or named pipe (written through) needs write permission only."""
    path = os.fspath(path)
    if not os.path.basename(path) or path.endswith(("/", os.sep)):
        raise ValueError(f"{flag}: {path} ends with a separator; give a file name")
    if is_special(path):
        if not os.access(path, os.W_OK):
            raise ValueError(f"{flag}: {path} is not writable")
        return
    folder, name = os.path.split(os.path.realpath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{flag}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{flag}: {path} is a directory")
    check_folder_writable(folder, flag)
    check_name(folder, name, flag)


def check_folder_writable(folder: str, flag: str) -> None:
    """Raise ValueError naming ``flag`` unless a file can be made in the existing ``folder`` (tried, not guessed:
    os.access says yes to root on a read-only mount point such as /proc)."""
    try:
        fd, tmp = create_temp(folder)
    except OSError as exc:
        raise ValueError(f"{flag}: cannot write in the folder {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(tmp)


def check_name(folder: str, name: str, flag: str) -> None:
    """Raise ValueError naming ``flag`` if ``name`` is longer than the file system under ``folder`` allows."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        limit = 255
    if len(os.fsencode(name)) > limit:
        raise ValueError(f"{flag}: the name {name[:40]}... is longer than the {limit} bytes a file name may have here")


def sha256(path) -> str:
    """The SHA-256 of the file at ``path``, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_json(text):
    """``json.loads(text)``; JSON nested deeper than the interpreter's recursion limit (a file of brackets) is a
    ValueError saying so, as a damaged text is, not a RecursionError; so is a key given twice in one object (which
    json.loads settles silently, keeping the last)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _unique_keys(pairs) -> dict:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {twice!r} is given twice in one object")
    return out


def json_safe(obj):
    """``obj`` with NaN and Inf replaced by None (JSON has no NaN); tuples become lists."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
