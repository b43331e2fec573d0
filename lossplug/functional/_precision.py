"""Working precision for the parts of a loss where 16-bit floats overflow or underflow."""

from __future__ import annotations

import torch
from torch import Tensor

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def at_least_float32(tensor: Tensor) -> Tensor:
    """Upcast float16/bfloat16 to float32 (large sums, logs of probabilities); else unchanged."""
    return tensor.float() if tensor.dtype in _HALF_DTYPES else tensor
