"""lossplug: pluggable, correct and fast losses for PyTorch Lightning and Hydra.

``import lossplug`` needs only torch; :class:`LossPlugMixin` and :class:`ConfigError` (which
import Lightning and Hydra) are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lossplug import functional, losses, weighting
from lossplug._validation import value_checks
from lossplug.composite import CompositeLoss, Route
from lossplug.input_checks import InputMisuseError, InputMisuseWarning, detect_misuse
from lossplug.losses import LossModule, MultiTermLoss
from lossplug.nonfinite import NonFiniteLossError, NonFiniteLossWarning
from lossplug.registry import (
    CallableLoss,
    UnknownLossError,
    available_losses,
    build_loss,
    register_loss,
)

if TYPE_CHECKING:
    from lossplug.config import ConfigError
    from lossplug.diagnostics import GradientDiagnostics
    from lossplug.mixin import LossPlugMixin

__version__ = "0.1.0"

__all__ = [
    "CallableLoss",
    "CompositeLoss",
    "ConfigError",
    "GradientDiagnostics",
    "InputMisuseError",
    "InputMisuseWarning",
    "LossModule",
    "LossPlugMixin",
    "MultiTermLoss",
    "NonFiniteLossError",
    "NonFiniteLossWarning",
    "Route",
    "UnknownLossError",
    "__version__",
    "available_losses",
    "build_loss",
    "detect_misuse",
    "functional",
    "losses",
    "register_loss",
    "value_checks",
    "weighting",
]

_LAZY = {
    "LossPlugMixin": "lossplug.mixin",
    "ConfigError": "lossplug.config",
    "GradientDiagnostics": "lossplug.diagnostics",
}


def __getattr__(name: str) -> Any:
    """Load the Lightning/Hydra glue on first use, keeping ``import lossplug`` torch-only."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lossplug' has no attribute {name!r}")
