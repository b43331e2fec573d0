"""The one reduction helper every functional loss ends with."""

from __future__ import annotations

import torch
from torch import Tensor


def reduce_loss(loss: Tensor, reduction: str, weight: Tensor | None = None) -> Tensor:
    """Reduce an element-wise loss, optionally weighted or masked.

    With a ``weight`` (any tensor broadcastable to ``loss``; a 0/1 mask is a weight) the mean is
    the weighted mean ``sum(w * l) / sum(w)``, so a mask averages over the kept elements only.
    When every weight is zero the mean is 0, never NaN.

    Args:
        loss: element-wise loss values.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        weight: optional element-wise weights or mask, broadcastable to ``loss``.

    Returns:
        A scalar for ``"mean"``/``"sum"``; the (weighted) element-wise loss for ``"none"``.
    """
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if weight is None:
        return total / max(loss.numel(), 1)
    weight_sum = torch.broadcast_to(weight, loss.shape).sum(dtype=total.dtype)
    return total / weight_sum.clamp_min(torch.finfo(total.dtype).tiny)
