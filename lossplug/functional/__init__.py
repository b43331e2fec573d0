"""Functional losses: tensors in, tensor out; pure, typed, ``torch.compile``-friendly."""

from lossplug.functional.classification import bce, cross_entropy, hinge, kl_div
from lossplug.functional.focal import focal
from lossplug.functional.regression import huber, l1, mse, smooth_l1

__all__ = [
    "bce",
    "cross_entropy",
    "focal",
    "hinge",
    "huber",
    "kl_div",
    "l1",
    "mse",
    "smooth_l1",
]
