"""Functional losses: tensors in, tensor out; pure, typed, ``torch.compile``-friendly."""

from lossplug.functional.regression import huber, l1, mse, smooth_l1

__all__ = ["huber", "l1", "mse", "smooth_l1"]
