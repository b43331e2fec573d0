"""Kernels in the ``setup_context`` style, without a signature computed on every call."""

from __future__ import annotations

import inspect
from typing import TypeVar

import torch

FunctionType = TypeVar("FunctionType", bound=type[torch.autograd.Function])


def signature_cached(function: FunctionType) -> FunctionType:
    """Give ``function.forward`` its signature once, as ``__signature__``.

    ``torch.autograd.Function.apply`` binds its arguments to ``forward``'s signature on every
    call of a function with a ``setup_context`` (the style ``torch.func`` needs), and
    ``inspect.signature`` reads a preset ``__signature__`` instead of analysing the function
    again on every call.

    Args:
        function: an ``autograd.Function`` subclass with a static ``forward``.

    Returns:
        The same class.
    """
    forward = function.forward
    forward.__signature__ = inspect.signature(forward)  # type: ignore[attr-defined]
    return function
