"""Shape helpers that also work on empty batches."""

from __future__ import annotations

import math

from torch import Tensor


def flatten_from(tensor: Tensor, dim: int) -> Tensor:
    """``tensor`` with its dimensions from ``dim`` on flattened into one (size 1 if none).

    Like ``tensor.reshape(*tensor.shape[:dim], -1)``, which cannot infer the ``-1`` of a
    tensor with 0 elements (an empty batch): the size is computed from the shape instead.

    Args:
        tensor: any tensor with at least ``dim`` dimensions.
        dim: the first dimension to flatten.

    Returns:
        A tensor of ``dim + 1`` dimensions (a view where possible).
    """
    return tensor.reshape(*tensor.shape[:dim], math.prod(tensor.shape[dim:]))
