"""lossplug: pluggable, correct and fast losses for PyTorch Lightning and Hydra."""

from lossplug import functional, losses
from lossplug._validation import value_checks
from lossplug.losses import LossModule, MultiTermLoss
from lossplug.registry import (
    CallableLoss,
    UnknownLossError,
    available_losses,
    build_loss,
    register_loss,
)

__version__ = "0.1.0"

__all__ = [
    "CallableLoss",
    "LossModule",
    "MultiTermLoss",
    "UnknownLossError",
    "__version__",
    "available_losses",
    "build_loss",
    "functional",
    "losses",
    "register_loss",
    "value_checks",
]
