"""The MLP layer: the model, its activations and losses, the training loop and the gradient check."""

from .activations import ACTIVATIONS
from .gradcheck import GradcheckResult, gradcheck, relative_error
from .losses import LOSSES
from .model import MLP
from .training import History, TrainingDiverged

__all__ = ["MLP", "History", "TrainingDiverged", "gradcheck", "GradcheckResult", "relative_error", "ACTIVATIONS", "LOSSES"]
