"""Training checkpoints: one consistent unit per epoch, committed by renaming its manifest into place.

A checkpoint folder holds ``checkpoint.json`` (the manifest: the run's settings, its history and
the names and SHA-256 of its model files) and the model files it names, ``model-NNNN.npz``
(``MLP.save`` after epoch NNNN: weights, momentum buffers, epochs_trained): the last epoch's
and, under early stopping, the best epoch's. Each epoch writes its model file under a new name,
then the manifest (atomically, the commit), then removes the files the manifest no longer names.
A process killed at any point leaves the previous epoch's checkpoint whole, or none before the
first, and ``read`` checks that the parts belong together before anything is resumed.

Because an epoch's sample order is drawn from (seed, epochs_trained), training the last epoch's
model for the remaining epochs ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import sys
from numbers import Real

from . import optim
from ._files import atomic_write, file_type, json_safe, parse_json, remove_stale_temps, sha256
from .mlp import MLP
from .mlp.activations import MAXOUT_PIECES
from .mlp.losses import OUTPUT_FOR_LOSS

MANIFEST = "checkpoint.json"
LOCK = ".deltaprop.lock"  # held (flock) by the run writing the folder; it holds that process's pid
FORMAT, VERSION = "deltaprop-checkpoint", 2
MAX_MANIFEST_BYTES = 64 << 20  # a run writes about 125 bytes an epoch: half a million epochs; it is read whole
RECORD_KEYS = ("format", "version", "settings", "history", "model", "best")  # of the manifest: no other is read
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")
# what a run writes in each list of its history (None: NaN, no accuracy or no validation data), which a resume goes on
# from (the adaptive schedule's rate follows the training losses): (test of the value as a float, what it says it must be)
_ACCURACY = (lambda x: math.isnan(x) or 0 <= x <= 1, "an accuracy in [0, 1]")
HISTORY_VALUES = {
    "loss": (math.isfinite, "a finite training loss (a run stops at one that is not)"),
    "accuracy": _ACCURACY,
    "val_accuracy": _ACCURACY,
    "seconds": (lambda x: 0 <= x < math.inf, "a time ≥ 0"),
}
MODEL_FILE = re.compile(r"model-(\d{4,})\.npz")
LEGACY = ("model.npz", "run.json")  # the format before VERSION 2: two files, no manifest


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or made by a different run."""


def best_epoch(val_loss) -> int | None:
    """The 1-based epoch of the first strictly lowest validation loss, None before a finite one
    (NaN, None and Inf never improve): the rule of MLP.fit's early stopping."""
    best, best_score = None, math.inf
    for epoch, score in enumerate(val_loss, 1):
        if score is not None and score < best_score:
            best, best_score = epoch, score
    return best


def stopped_early(val_loss, patience) -> bool:
    """Whether early stopping with ``patience`` ends the run after these epochs."""
    return bool(patience) and len(val_loss) - (best_epoch(val_loss) or 0) >= patience


class Checkpoint:
    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.manifest_path = os.path.join(self.folder, MANIFEST)
        self._named = None  # {"model": {...}, "best": {...} or None} of the last manifest read or written
        self.dead_holder = None  # the pid in a lock file that its run, killed, left behind (set by locked)
        self._dead_since = None  # that lock file's mtime (ns): when the killed run started

    def exists(self) -> bool:
        """Whether the folder holds a committed checkpoint (or one of the older format), or something in its place
        (a symlink, even a dangling one, that a new run would write through: ``read`` refuses it)."""
        return any(os.path.lexists(os.path.join(self.folder, f)) for f in (MANIFEST, *LEGACY))

    def orphans(self) -> list:
        """The model-NNNN.npz files of a folder without a committed checkpoint (sorted): a run's killed before its
        first checkpoint, or files that are not deltaprop's to remove. A new run refuses them rather than delete them."""
        if self.exists() or not os.path.isdir(self.folder):
            return []
        return sorted(f for f in os.listdir(self.folder) if MODEL_FILE.fullmatch(f))

    def killed_first_epoch(self) -> bool:
        """Whether the folder's orphans are what a run killed before its first checkpoint leaves (its flock gone, its
        lock file with its pid left: ``locked`` found one): one model-0001.npz, written after that run started."""
        if self.dead_holder is None or self.orphans() != ["model-0001.npz"]:
            return False
        try:
            return os.lstat(os.path.join(self.folder, "model-0001.npz")).st_mtime_ns >= self._dead_since
        except OSError:
            return False

    def discard_killed_first_epoch(self) -> None:
        """Remove what ``killed_first_epoch`` found, and the killed writes' temporary files."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.folder, "model-0001.npz"))
        remove_stale_temps(self.folder)

    def write(self, model: MLP, settings: dict, history: dict, best: int | None = None) -> None:
        """Commit the checkpoint after epoch ``model.epochs_trained``; ``best``: the 1-based best epoch under
        early stopping (this one, or the one of the manifest written before), None without."""
        epoch = model.epochs_trained
        name = f"model-{epoch:04d}.npz"
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, name)
        model.save(path)
        try:
            self._commit(model, path, name, settings, history, best)
        except BaseException:
            # nothing committed yet (a manifest in place is this write's: the folder is held, and a fresh run refuses
            # one that has a manifest): leave no model file behind
            if self._named is None and not os.path.lexists(self.manifest_path) and os.path.exists(path):
                os.remove(path)
            raise

    def _commit(self, model, path, name, settings, history, best) -> None:
        """Write the manifest naming the model file ``name`` just saved at ``path``, then remove what it no longer names."""
        epoch = model.epochs_trained
        current = {"file": name, "sha256": sha256(path), "epoch": epoch}
        if best is None:
            best_entry = None
        elif best == epoch:
            best_entry = current
        else:
            best_entry = (self._named or {}).get("best")
            if best_entry is None or best_entry["epoch"] != best:
                raise AssertionError(f"checkpoint: best epoch {best} is not the one checkpointed before")
        record = {"format": FORMAT, "version": VERSION, "settings": settings, "history": history,
                  "model": current, "best": best_entry}
        text = json.dumps(json_safe(record), indent=1)
        atomic_write(self.manifest_path, lambda f: f.write(text + "\n"), binary=False)
        self._named = {"model": current, "best": best_entry}
        self.remove_unnamed()

    @contextlib.contextmanager
    def locked(self):
        """Hold the folder (made if missing) for one run: a second run into it is refused by name, not left to race
        for its files. An advisory flock on LOCK, which does not work across NFS (a file system that refuses flock: a
        note, and the run goes on unlocked); the lock file, and the folders
        made here when no checkpoint was written into them, are removed again at the end."""
        try:
            import fcntl  # POSIX; without it (Windows) the folder is not locked
        except ImportError:
            fcntl = None

        made, up = [], os.path.abspath(self.folder)
        while not os.path.exists(up):
            made.append(up)
            up = os.path.dirname(up)
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, LOCK)
        while True:
            try:  # never through a symlink: the lock file is truncated and given the pid
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise CheckpointError(f"--checkpoint: {path} is a symbolic link, not the lock file a run makes; "
                                          "remove it") from None
                raise CheckpointError(f"--checkpoint: cannot open the lock file {path} ({exc.strerror or exc})") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise CheckpointError(f"--checkpoint: {path} is {file_type(os.stat(path).st_mode)}, not the lock file a run "
                                      "makes; remove it")
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                pid = f" (pid {holder})" if holder.isdigit() else ""
                raise CheckpointError(f"--checkpoint: {self.folder} is in use by another deltaprop process{pid}; wait "
                                      "for it to end, or choose another folder") from None
            except OSError as exc:  # a file system without flock (NFS without lockd: ENOLCK; some FUSE mounts)
                print(f"deltaprop: --checkpoint: {self.folder} cannot be locked ({exc.strerror or exc}); the run goes on "
                      "unlocked: start no second run into it", file=sys.stderr)
                fcntl = None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:  # its holder removed it as this one opened it: try again
                same = False
            if same:
                break
            os.close(fd)
        if fcntl is not None:  # held: a pid in the file is a killed run's (a run that ends removes its lock file)
            previous = os.read(fd, 32).decode("ascii", "replace").strip()
            if previous:
                self.dead_holder, self._dead_since = previous, os.fstat(fd).st_mtime_ns
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield self
        finally:
            if self.killed_first_epoch():  # a killed run's leavings, left (--resume refused): so is its lock file, as it was
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{self.dead_holder}\n".encode(), 0)
                os.utime(fd, ns=(self._dead_since, self._dead_since))
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)  # while held: a process that opened it meanwhile sees another inode and tries again
            os.close(fd)
            for folder in made:  # the innermost first; only while empty
                try:
                    os.rmdir(folder)
                except OSError:
                    break

    def remove_unnamed(self) -> None:
        """Remove the model files the manifest does not name and the temporary files of killed writes (never those
        of a live process: another program's, or another deltaprop's writing into this folder)."""
        keep = {entry["file"] for entry in self._named.values() if entry}
        for f in os.listdir(self.folder):
            if MODEL_FILE.fullmatch(f) and f not in keep:
                try:
                    os.remove(os.path.join(self.folder, f))
                except FileNotFoundError:
                    pass
        remove_stale_temps(self.folder)

    def read(self, backend="auto"):
        """(model, settings, history, best): the last epoch's model, the run's settings and history, and the
        best epoch's model under early stopping (None without, or before a finite validation loss).
        Raises CheckpointError saying what is wrong."""
        settings, history, current, best = self._record()
        model = self._load(current, settings, backend)
        best_model = None
        if best is not None:
            best_model = model if best["file"] == current["file"] else self._load(best, settings, backend)
        self._named = {"model": current, "best": best}
        return model, settings, history, best_model

    def settings(self) -> dict:
        """The run's settings, as its manifest holds them (checked as ``read`` checks them; no model is read)."""
        return self._record()[0]

    def _record(self) -> tuple:
        """(settings, history, model entry, best entry or None) of the manifest, checked; CheckpointError if not."""
        if not os.path.lexists(self.manifest_path):
            if any(os.path.lexists(os.path.join(self.folder, f)) for f in LEGACY):
                raise CheckpointError(f"checkpoint: {self.folder} holds a checkpoint of an older deltaprop (model.npz and "
                                      "run.json, no checkpoint.json), which cannot be checked; start a new run in another folder")
            raise CheckpointError(f"checkpoint: {self.manifest_path} is missing")
        _own_file(self.manifest_path)
        try:
            size = os.path.getsize(self.manifest_path)
            if size > MAX_MANIFEST_BYTES:
                raise ValueError(f"its {size} bytes are more than a manifest has, {MAX_MANIFEST_BYTES} at most")
            with open(self.manifest_path, encoding="utf-8") as f:
                record = parse_json(f.read())
            return _check_record(record)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint: {self.manifest_path} is damaged ({exc})") from None

    def _load(self, entry: dict, settings: dict, backend) -> MLP:
        """The model file ``entry`` names, checked against its hash and the run's settings."""
        path = os.path.join(self.folder, entry["file"])
        _own_file(path)
        try:
            digest = sha256(path)
        except OSError as exc:
            raise CheckpointError(f"checkpoint: {path}, named by {MANIFEST}, cannot be read ({exc.strerror or exc})") from None
        if digest != entry["sha256"]:
            raise CheckpointError(f"checkpoint: {path} is not the file {MANIFEST} names (its SHA-256 differs): "
                                  "it was changed, or copied from another run")
        try:
            model = MLP.load(path, backend=backend)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint: {exc}") from None
        # all the file holds of the run's settings: another run's file under the manifest's hash would otherwise train on
        # with its own activation, initialisation, regularisation or optimizer state (dropped by a fit of another kind)
        optimizer = settings.get("optimizer")
        found = {"epochs_trained": model.epochs_trained, "seed": model.seed, "dtype": model.dtype.name,
                 "layer_sizes": list(model.layer_sizes), "loss": model.loss, "maxout_pieces": model.maxout_pieces,
                 "activations": list(model.activations), "init": model.init,
                 "dropout": list(model.dropout) if any(model.dropout) else None, "max_norm": model.max_norm,
                 "optimizer": getattr(model.network.optimizer, "name", None)}
        wanted = {"epochs_trained": entry["epoch"], **{k: settings[k] for k in ("seed", "dtype", "layer_sizes", "loss")},
                  "maxout_pieces": settings.get("maxout_pieces", MAXOUT_PIECES),  # a checkpoint from before maxout: 2
                  "activations": [settings.get("activation")] * (model.n_layers - 1) + [OUTPUT_FOR_LOSS.get(settings["loss"])],
                  "init": settings.get("init", "auto"), "dropout": settings.get("dropout"), "max_norm": settings.get("max_norm"),
                  "optimizer": optimizer.get("name") if isinstance(optimizer, dict) else None}
        differ = [f"{k} {found[k]!r}, expected {wanted[k]!r}" for k in wanted if found[k] != wanted[k]]
        if differ:
            raise CheckpointError(f"checkpoint: {path} does not belong to this checkpoint ({'; '.join(differ)})")
        return model


def _own_file(path: str) -> None:
    """CheckpointError unless ``path``, if it exists, is a regular file of the folder itself: a symlink would be trusted
    for a file elsewhere (and the manifest written through it, into that file), and reading a named pipe or device
    would wait for a writer or never end."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # missing or unreadable: the read says so
    if stat.S_ISLNK(mode):
        raise CheckpointError(f"checkpoint: {path} is a symbolic link (to {os.readlink(path)}); a checkpoint's files must "
                              "be in its folder: put a copy of the file in its place")
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"checkpoint: {path} is not a regular file ({file_type(mode)})")


def _check_record(record):
    """(settings, history, model entry, best entry) of a manifest, every part checked; ValueError if not."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError("not a deltaprop checkpoint manifest")
    if type(record.get("version")) is not int or record["version"] != VERSION:  # not 2.0
        raise ValueError(f"format version {record.get('version')!r}, this deltaprop reads {VERSION}")
    _known(record, RECORD_KEYS, "")
    settings, history = record.get("settings"), record.get("history")
    if not isinstance(settings, dict):
        raise ValueError("settings: expected an object")
    for key, kind in (("seed", int), ("dtype", str), ("loss", str), ("layer_sizes", list)):
        if not isinstance(settings.get(key), kind) or isinstance(settings.get(key), bool):
            raise ValueError(f"settings: {key} is missing or not a {kind.__name__}")
    if "optimizer" in settings:  # the manifest's own (the model file's is checked against it): its fault, by name
        try:
            optim.from_config(settings["optimizer"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"settings: optimizer: {str(exc).removeprefix('optimizer: ')}") from None
    if not isinstance(history, dict):
        raise ValueError("history: expected an object")
    _known(history, HISTORY_KEYS, "history: ")
    current = _check_entry(record.get("model"), "model")
    epochs = current["epoch"]
    floats = {}  # each list as float, None as NaN
    for key in HISTORY_KEYS:
        values = history.get(key)
        if not isinstance(values, list) or len(values) != epochs:
            raise ValueError(f"history: {key} must list one value per epoch ({epochs})")
        ok, says = HISTORY_VALUES.get(key, (None, None))
        floats[key] = []
        for i, v in enumerate(values):
            if v is not None and (isinstance(v, bool) or not isinstance(v, Real)):
                raise ValueError(f"history: {key}[{i}] is {v!r}, not a number")
            try:
                x = math.nan if v is None else float(v)
            except OverflowError:  # an integer of hundreds of digits
                raise ValueError(f"history: {key}[{i}] is an integer beyond a float's range, not a number") from None
            if ok is not None and not ok(x):
                raise ValueError(f"history: {key}[{i}] is {v!r}, not {says}")
            floats[key].append(x)
    history = floats
    best = None if record.get("best") is None else _check_entry(record["best"], "best")
    expected = best_epoch(history["val_loss"]) if settings.get("early_stopping") else None
    if (best and best["epoch"]) != expected:
        raise ValueError(f"best: names epoch {best and best['epoch']}, the history's best epoch is {expected}")
    return settings, history, current, best


def _known(record: dict, keys, what: str) -> None:
    """ValueError for entries of ``record`` other than ``keys``: a newer deltaprop's, which this one would ignore."""
    unknown = [k for k in record if k not in keys]
    if unknown:
        raise ValueError(f"{what}unknown entries {', '.join(map(repr, unknown))} (a newer deltaprop's?)")


def _check_entry(entry, what: str) -> dict:
    if not isinstance(entry, dict):
        raise ValueError(f"{what}: expected an object")
    name, digest, epoch = entry.get("file"), entry.get("sha256"), entry.get("epoch")
    match = MODEL_FILE.fullmatch(name) if isinstance(name, str) else None
    if match is None or isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1 or int(match[1]) != epoch:
        raise ValueError(f"{what}: file {name!r} and epoch {epoch!r} do not name a model-NNNN.npz of that epoch")
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise ValueError(f"{what}: sha256 {digest!r} is not a SHA-256 in hex")
    return {"file": name, "sha256": digest, "epoch": epoch}
