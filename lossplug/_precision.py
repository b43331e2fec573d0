"""Working precision for 16-bit inputs: every loss computes in float32 and returns float32.

float16 overflows above 65504 (a squared error of 256, a Dice sum over a 256 x 256 image) and
both 16-bit formats round sums of many terms and logs of probabilities to 3 significant
digits. So each functional upcasts its float16/bfloat16 inputs once, and the parts that
autocast would run in 16 bits (matrix products) run with autocast off. Upcasting is a no-op
for float32 and float64 inputs: their path is unchanged.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import overload

import torch
from torch import Tensor

_HALF_DTYPES = (torch.float16, torch.bfloat16)


@overload
def at_least_float32(tensor: Tensor) -> Tensor: ...


@overload
def at_least_float32(tensor: None) -> None: ...


def at_least_float32(tensor: Tensor | None) -> Tensor | None:
    """Upcast a float16/bfloat16 tensor to float32; anything else (or ``None``) unchanged."""
    if tensor is not None and tensor.dtype in _HALF_DTYPES:
        return tensor.float()
    return tensor


def autocast_off(device: torch.device) -> AbstractContextManager[object]:
    """A block with autocast off on ``device`` (a no-op context when it is off already).

    Autocast runs matrix products (``mm``, ``bmm``, ``addmm``) in 16 bits even on float32
    inputs; a loss's sums and Gram matrices must not be.
    """
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()
