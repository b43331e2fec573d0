"""Functional losses: tensors in, tensor out; pure, typed, ``torch.compile``-friendly."""

from lossplug.functional.asymmetric import asymmetric, asymmetric_components
from lossplug.functional.classification import bce, cross_entropy, hinge, kl_div
from lossplug.functional.focal import focal
from lossplug.functional.lovasz import lovasz_hinge, lovasz_softmax
from lossplug.functional.metric_learning import (
    contrastive,
    contrastive_components,
    infonce,
    infonce_components,
    supcon,
    supcon_components,
    triplet,
    triplet_margin,
)
from lossplug.functional.overlap import (
    dice,
    dice_ce,
    dice_ce_components,
    generalized_dice,
    tversky,
)
from lossplug.functional.poly import poly1, poly1_components
from lossplug.functional.quantile import quantile_components, quantile_loss
from lossplug.functional.regression import charbonnier, huber, l1, mse, smooth_l1

__all__ = [
    "asymmetric",
    "asymmetric_components",
    "bce",
    "charbonnier",
    "contrastive",
    "contrastive_components",
    "cross_entropy",
    "dice",
    "dice_ce",
    "dice_ce_components",
    "focal",
    "generalized_dice",
    "hinge",
    "huber",
    "infonce",
    "infonce_components",
    "kl_div",
    "l1",
    "lovasz_hinge",
    "lovasz_softmax",
    "mse",
    "poly1",
    "poly1_components",
    "quantile_components",
    "quantile_loss",
    "smooth_l1",
    "supcon",
    "supcon_components",
    "triplet",
    "triplet_margin",
    "tversky",
]
