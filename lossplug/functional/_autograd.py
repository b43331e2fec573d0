"""Helpers for lossplug's autograd functions: a cheaper ``apply``, a vmap test, a graph test."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor
from torch._functorch.utils import unwrap_dead_wrappers


class PositionalFunction(torch.autograd.Function):
    """An autograd function with ``setup_context``, applied without a per-call argument binding.

    A ``setup_context`` is what lets ``torch.func`` (vmap, grad, jvp) run an autograd
    function. With one, torch's ``Function.apply`` binds the arguments against
    ``inspect.signature(forward)`` on every call, to fill in defaults: 25-35 µs a call on
    this project's CPU, 2-3 % of BCE's forward + backward at 256 x 1000. lossplug passes
    every argument positionally, so the binding changes nothing; outside functorch's
    transforms this ``apply`` unwraps dead functorch wrappers, as torch's does, and goes
    straight to the C++ ``apply``. Under a transform it is torch's ``apply`` (with the
    signature computed once, at class creation). ``torch.compile`` traces ``forward`` and
    ``backward`` itself and never calls ``apply``.

    Subclasses define ``forward`` without ``ctx``, ``setup_context`` and ``backward``. A call
    with keyword arguments takes torch's ``apply``, which binds them.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.forward.__signature__ = inspect.signature(cls.forward)  # type: ignore[attr-defined]

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """``forward(*args, **kwargs)``, recorded for autograd and ``torch.func``'s transforms."""
        if kwargs or torch._C._are_functorch_transforms_active():
            return super().apply(*args, **kwargs)
        return super(torch.autograd.Function, cls).apply(*unwrap_dead_wrappers(args))


def batched_by_vmap(*tensors: Tensor) -> bool:
    """Whether a vmap batches any of ``tensors`` in the running function.

    ``torch.func.vmap``, or torch's older vmap, which runs the backward passes of
    ``torch.autograd.grad(..., is_grads_batched=True)`` and of vectorised Jacobians. Some
    in-place operations (``addcmul_``) have no batching rule: vmap falls back on a slow loop,
    with a warning, and the out-of-place operation must be used there instead; none can
    write a batched value into an unbatched tensor.
    """
    functorch = torch._C._functorch
    return any(
        functorch.is_batchedtensor(tensor) or functorch.is_legacy_batchedtensor(tensor)
        for tensor in tensors
    )


def backward_frees_graph() -> bool:
    """Whether the running backward pass frees the graph, so its saved tensors may be reused.

    False with ``retain_graph=True`` (a second pass would read what was overwritten), which
    ``create_graph=True`` implies unless ``retain_graph=False`` is passed too, and on a torch
    without the query. Call it only from a ``backward``.
    """
    graph_is_kept = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return graph_is_kept is not None and not graph_is_kept()
