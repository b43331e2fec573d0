"""Helpers for lossplug's autograd functions: a per-call cost cut, and a vmap test."""

from __future__ import annotations

import inspect
from typing import TypeVar

import torch
from torch import Tensor

FunctionType = TypeVar("FunctionType", bound=type[torch.autograd.Function])


def with_cached_signature(function: FunctionType) -> FunctionType:
    """Class decorator: compute ``inspect.signature(function.forward)`` once, not per call.

    torch's ``Function.apply`` binds the arguments of a function that has a ``setup_context``
    against ``inspect.signature(forward)`` on every call (~44 µs of a ~500 µs multiclass hinge
    at 128 x 10 on the CPU). ``inspect.signature`` returns a function's ``__signature__``
    when it has one.
    """
    function.forward.__signature__ = inspect.signature(function.forward)
    return function


def batched_by_vmap(*tensors: Tensor) -> bool:
    """Whether ``torch.func.vmap`` batches any of ``tensors`` in the running function.

    Some in-place operations (``addcmul_``) have no batching rule: vmap falls back on a slow
    loop, with a warning, and the out-of-place operation must be used there instead.
    """
    return any(torch._C._functorch.is_batchedtensor(tensor) for tensor in tensors)
