"""Gradients of several scalars on shared parameters, one flattened row each, ``.grad`` untouched.

Gradient diagnostics (:mod:`lossplug.diagnostics`) take each loss term's gradient with it, and
``normalize_loss="global"`` (:mod:`lossplug.normalize`) each count group's. It calls
``torch.autograd.grad``, which returns the gradients instead of accumulating them in
``.grad``, so neither an optimizer step nor DDP's reducer (which syncs ``.grad``) sees them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor


def term_gradients(terms: Sequence[Tensor], params: Sequence[Tensor]) -> Tensor:
    """Each scalar's gradient on ``params``, flattened: one row per scalar, graph kept.

    A parameter a scalar does not depend on contributes zeros to its row.

    Args:
        terms: scalars, each attached to the graph of ``params`` (or constant).
        params: the parameters, all requiring gradients.

    Returns:
        A ``(len(terms), total number of parameter elements)`` tensor, in the parameters'
        common dtype (at least float32).
    """
    sizes = [p.numel() for p in params]
    dtype = functools.reduce(torch.promote_types, (p.dtype for p in params), torch.float32)
    device = params[0].device if params else None
    gradients = torch.zeros(len(terms), sum(sizes), dtype=dtype, device=device)
    for row, term in zip(gradients, terms, strict=True):
        if not params or not term.requires_grad:
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        for piece, grad in zip(row.split(sizes), grads, strict=True):
            if grad is not None:
                piece.copy_(grad.reshape(-1))
    return gradients
