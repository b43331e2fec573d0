"""In-place arithmetic on a kernel's own fresh tensors, out of place under ``torch.func``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lossplug._transforms import wrapped_by_torch_func


def in_place(tensor: Tensor, operation: str, *args: Any, **kwargs: Any) -> Tensor:
    """``tensor.<operation>_(*args)``, or ``torch.<operation>(tensor, *args)`` under a transform.

    ``torch.func.vmap`` refuses to write a batched operand into a tensor it does not batch
    (e.g. a batched target into a buffer computed from an unbatched prediction), has no
    batching rule for some in-place operations, and batches the incoming gradient alone in
    ``torch.autograd.grad(..., is_grads_batched=True)``; wherever a tensor involved is a
    transform's wrapper the out-of-place call does the same arithmetic.

    Args:
        tensor: a fresh tensor the caller owns (no one else holds it).
        operation: the name of a torch operation with an in-place form, e.g. ``"mul"``.
        *args: its other arguments.
        **kwargs: its keyword arguments.

    Returns:
        The result: ``tensor`` itself, or a new tensor.
    """
    tensors = [value for value in (tensor, *args) if isinstance(value, Tensor)]
    if any(map(wrapped_by_torch_func, tensors)):
        return getattr(torch, operation)(tensor, *args, **kwargs)
    return getattr(tensor, operation + "_")(*args, **kwargs)
