"""Training checkpoints: a folder with ``model.npz`` (``MLP.save``: weights, momentum buffers,
epochs_trained) and ``run.json`` (the run's settings and its history so far).

Both are written atomically each epoch, run.json first: if the process dies between the two,
run.json holds one epoch more than model.npz, and ``read`` cuts the history back to the model's
epochs. Because the epoch's sample order is drawn from (seed, epochs_trained), training the
loaded model for the remaining epochs ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os

from ._files import atomic_write, json_safe
from .mlp import MLP

MODEL, RUN = "model.npz", "run.json"
FORMAT = "deltaprop-checkpoint"
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or made by a different run."""


class Checkpoint:
    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.model_path = os.path.join(self.folder, MODEL)
        self.run_path = os.path.join(self.folder, RUN)

    def exists(self) -> bool:
        return os.path.exists(self.model_path) or os.path.exists(self.run_path)

    def write(self, model: MLP, settings: dict, history: dict, complete: bool = False) -> None:
        record = {"format": FORMAT, "settings": settings, "history": history, "complete": complete}
        text = json.dumps(json_safe(record), indent=1)
        os.makedirs(self.folder, exist_ok=True)
        atomic_write(self.run_path, lambda f: f.write(text), binary=False)
        model.save(self.model_path)

    def read(self, backend="auto"):
        """(model, settings, history, complete); raises CheckpointError saying what is wrong."""
        for path in (self.run_path, self.model_path):
            if not os.path.exists(path):
                raise CheckpointError(f"checkpoint: {path} is missing; the checkpoint in {self.folder} is incomplete")
        try:
            with open(self.run_path, encoding="utf-8") as f:
                record = json.load(f)
            if record.get("format") != FORMAT:
                raise ValueError("not a deltaprop checkpoint")
            settings, history, complete = record["settings"], record["history"], bool(record["complete"])
            lengths = {len(history[k]) for k in HISTORY_KEYS}
            if not isinstance(settings, dict) or len(lengths) != 1:
                raise ValueError("inconsistent settings or history")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint: {self.run_path} is damaged ({exc})") from None
        try:
            model = MLP.load(self.model_path, backend=backend)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint: {exc}") from None
        epochs = model.epochs_trained
        if lengths.pop() < epochs:
            raise CheckpointError(
                f"checkpoint: {self.run_path} records fewer epochs than {self.model_path} ({epochs}); the checkpoint is damaged"
            )
        history = {k: [_nan(v) for v in history[k][:epochs]] for k in HISTORY_KEYS}
        return model, settings, history, complete


def _nan(v):
    return float("nan") if v is None else v
