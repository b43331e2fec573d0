"""Loss modules: ``nn.Module`` wrappers with options, buffers, input checks and ``components()``."""

from lossplug.losses.asymmetric import AsymmetricLoss
from lossplug.losses.base import LossModule, MultiTermLoss
from lossplug.losses.classification import BCELoss, CrossEntropyLoss, HingeLoss, KLDivLoss
from lossplug.losses.focal import FocalLoss, Poly1Loss
from lossplug.losses.lovasz import LovaszHingeLoss, LovaszSoftmaxLoss
from lossplug.losses.metric_learning import (
    ContrastiveLoss,
    InfoNCELoss,
    SupConLoss,
    TripletLoss,
)
from lossplug.losses.overlap import DiceCELoss, DiceLoss, GeneralizedDiceLoss, TverskyLoss
from lossplug.losses.quantile import QuantileLoss
from lossplug.losses.regression import (
    CharbonnierLoss,
    HuberLoss,
    L1Loss,
    MSELoss,
    SmoothL1Loss,
)

__all__ = [
    "AsymmetricLoss",
    "BCELoss",
    "CharbonnierLoss",
    "ContrastiveLoss",
    "CrossEntropyLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "GeneralizedDiceLoss",
    "HingeLoss",
    "HuberLoss",
    "InfoNCELoss",
    "KLDivLoss",
    "L1Loss",
    "LossModule",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
    "MSELoss",
    "MultiTermLoss",
    "Poly1Loss",
    "QuantileLoss",
    "SmoothL1Loss",
    "SupConLoss",
    "TripletLoss",
    "TverskyLoss",
]
