r"""Quantile (pinball) loss for several quantiles at once (Koenker & Bassett 1978).

From "Regression Quantiles". For a quantile level :math:`\tau \in (0, 1)` and the residual
:math:`u = y - \hat y` (target minus prediction):

.. math::

    \rho_\tau(u) = \max\bigl(\tau u,\; (\tau - 1) u\bigr)
        = u\,\bigl(\tau - \mathbb{1}[u < 0]\bigr)

An under-prediction costs :math:`\tau` per unit, an over-prediction :math:`1 - \tau`, so the
constant minimising the mean of :math:`\rho_\tau` over a sample is its :math:`\tau`-quantile
(any point between the two order statistics that bracket it); :math:`\tau = 0.5` is half the
absolute error. A model predicts one column per level: ``pred`` is ``(..., Q)`` for the
levels :math:`\tau_1 < \dots < \tau_Q` and ``target`` is ``(...)`` (or ``(..., 1)``). With
``reduction="mean"`` the loss is the mean over the :math:`N` items (the elements of
``target``) and the :math:`Q` levels alike,

.. math::

    L = \frac{1}{N Q} \sum_{i=1}^{N} \sum_{k=1}^{Q} \rho_{\tau_k}(y_i - \hat y_{ik}),

which is the mean of the :math:`Q` per-level losses, each scikit-learn's
``mean_pinball_loss(alpha=tau_k)``.

The gradient in :math:`\hat y` is :math:`\mathbb{1}[u < 0] - \tau`, with the subgradient
:math:`-\tau` at :math:`u = 0`. An empty batch gives 0 with ``reduction="mean"``; float16 and
bfloat16 inputs are computed in float32 (:mod:`lossplug._precision`).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from itertools import pairwise

from torch import Tensor

from lossplug._precision import at_least_float32
from lossplug._validation import check_floating, check_number, check_reduction
from lossplug.functional._reduce import reduce_loss

NAME = "quantile"


def quantile_loss(
    pred: Tensor, target: Tensor, quantiles: Sequence[float], reduction: str = "mean"
) -> Tensor:
    r"""Pinball loss of ``pred``'s columns at the levels ``quantiles``; see the module docstring.

    Args:
        pred: predictions ``(..., Q)``, column ``k`` for the level ``quantiles[k]``.
        target: targets ``(...)``, or ``(..., 1)``.
        quantiles: the ``Q`` levels, numbers in (0, 1), strictly increasing.
        reduction: ``"mean"`` (over every item and level: :math:`\frac{1}{NQ}\sum_{i,k}`),
            ``"sum"`` or ``"none"`` (the element-wise losses, shaped like ``pred``).

    Returns:
        The loss.

    Example:
        >>> import torch
        >>> from lossplug.functional import quantile_loss
        >>> pred = torch.tensor([[0.0, 1.0], [2.0, 2.0]])  # two items, levels 0.1 and 0.9
        >>> quantile_loss(pred, torch.tensor([1.0, 0.0]), quantiles=[0.1, 0.9])
        tensor(0.5250)
    """
    check_reduction(NAME, reduction)
    loss = pinball_elements(pred, target, check_quantiles(NAME, quantiles))
    return reduce_loss(loss, reduction)


def quantile_components(
    pred: Tensor, target: Tensor, quantiles: Sequence[float], reduction: str = "mean"
) -> dict[str, Tensor]:
    """Each level's pinball loss, named by :func:`quantile_names`.

    Arguments as in :func:`quantile_loss`.

    Returns:
        ``{"q10": ..., "q50": ..., "q90": ...}`` for the levels 0.1, 0.5 and 0.9: each the
        mean over the items (``"mean"``), their sum (``"sum"``) or the ``(...)`` losses
        (``"none"``). :func:`quantile_loss`'s mean is the mean of the means, its sum the sum
        of the sums.
    """
    check_reduction(NAME, reduction)
    levels = check_quantiles(NAME, quantiles)
    loss = pinball_elements(pred, target, levels)
    if reduction == "none":
        columns = loss.unbind(-1)
    else:
        columns = loss.reshape(-1, len(levels)).sum(0)
        if reduction == "mean":
            columns = columns / max(loss.numel() // len(levels), 1)
        columns = columns.unbind()
    return dict(zip(quantile_names(levels), columns, strict=True))


def pinball_elements(pred: Tensor, target: Tensor, levels: tuple[float, ...]) -> Tensor:
    r""":math:`\rho_{\tau_k}(y_i - \hat y_{ik})` for every item and level, shaped like ``pred``.

    ``levels`` are checked (:func:`check_quantiles`); the tensors are checked here.
    """
    check_floating(NAME, "pred", pred, "predictions, one column per quantile")
    check_floating(NAME, "target", target, "regression targets")
    items = pred.shape[:-1]
    if pred.ndim == 0 or pred.shape[-1] != len(levels):
        raise ValueError(
            f"{NAME}: 'pred' must have one column per quantile in its last dimension, "
            f"{len(levels)} for quantiles {list(levels)}, got shape {tuple(pred.shape)}"
        )
    if target.shape == items:
        target = target.unsqueeze(-1)
    elif target.shape != (*items, 1):
        raise ValueError(
            f"{NAME}: 'target' must have shape {tuple(items)} (pred's shape without its "
            f"last dimension) or {(*items, 1)}, got {tuple(target.shape)}"
        )
    pred, target = at_least_float32(pred), at_least_float32(target)
    residual = target - pred
    below = (residual < 0).to(residual.dtype)
    return residual * (residual.new_tensor(levels) - below)


def check_quantiles(loss: str, quantiles: Sequence[float]) -> tuple[float, ...]:
    """Validate the option ``quantiles``: a non-empty, strictly increasing sequence in (0, 1).

    Returns:
        The levels as a tuple of floats.

    Raises:
        TypeError: if ``quantiles`` is not a sequence of numbers.
        ValueError: if it is empty, a level is outside (0, 1) or the levels do not increase.
    """
    if isinstance(quantiles, (str, bytes)) or not isinstance(quantiles, Sequence):
        raise TypeError(
            f"{loss}: option 'quantiles' must be a sequence of numbers in (0, 1), got {quantiles!r}"
        )
    levels = tuple(
        check_number(
            loss,
            f"quantiles[{k}]",
            level,
            minimum=0.0,
            maximum=1.0,
            exclusive_minimum=True,
            exclusive_maximum=True,
        )
        for k, level in enumerate(quantiles)
    )
    if not levels:
        raise ValueError(f"{loss}: option 'quantiles' must hold at least one level, got []")
    if any(low >= high for low, high in pairwise(levels)):
        raise ValueError(
            f"{loss}: option 'quantiles' must be strictly increasing, got {list(levels)}"
        )
    return levels


def quantile_names(levels: Sequence[float]) -> tuple[str, ...]:
    """Component names of the levels: ``q`` and the level in percent, ``_`` for its point.

    0.1 is ``q10``, 0.5 ``q50``, 0.025 ``q2_5`` and 0.975 ``q97_5``: the percent is written
    exactly from the level's shortest decimal form, so distinct levels get distinct names.
    """
    percents = (format((Decimal(repr(level)) * 100).normalize(), "f") for level in levels)
    return tuple("q" + percent.replace(".", "_") for percent in percents)
