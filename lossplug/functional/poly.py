r"""Poly-1 loss (Leng et al. 2022), cross-entropy or focal loss plus a polynomial term.

From "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions".
Cross-entropy and focal loss expand in powers of :math:`1 - p_t`, with :math:`p_t` the predicted
probability of the true class; Poly-1 raises the leading coefficient by :math:`\varepsilon`:

.. math::

    L_\text{Poly-1 CE} = -\log p_t + \varepsilon\,(1 - p_t), \qquad
    L_\text{Poly-1 FL} = -\alpha_t (1 - p_t)^{\gamma} \log p_t
        + \varepsilon\,(1 - p_t)^{\gamma + 1}

``gamma=0`` without ``alpha`` is Poly-1 cross-entropy (the paper's default, with
:math:`\varepsilon = 1`, for ImageNet classification); ``gamma > 0`` is Poly-1 focal loss, which
the paper uses for detection (with a negative :math:`\varepsilon` there). ``epsilon=0`` gives
:func:`lossplug.functional.focal` (and cross-entropy at ``gamma=0``). As in the paper's code,
``alpha`` weights the focal term only. :math:`\varepsilon \ge -1` keeps the loss non-negative
without ``alpha``: :math:`-\log p_t \ge 1 - p_t`.

The base term is :func:`lossplug.functional.focal`'s, with its modes, ``ignore_index``,
precision and kernels; :math:`1 - p_t` is formed without cancellation
(:math:`-\operatorname{expm1}(\log p_t)`, or :math:`y\,\sigma(-z) + (1 - y)\,\sigma(z)`).
Poly-1 cross-entropy of large logits on the CPU takes both terms from
:mod:`lossplug.kernels.poly1_cross_entropy` where :func:`lossplug.kernels.applies` allows.
"""

from __future__ import annotations

from torch import Tensor

from lossplug._validation import check_number
from lossplug.functional._reduce import reduce_loss
from lossplug.functional.focal import focal_elements


def poly1(
    pred: Tensor,
    target: Tensor,
    mode: str = "multiclass",
    epsilon: float = 1.0,
    gamma: float = 0.0,
    alpha: float | Tensor | list[float] | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Poly-1 loss from logits: the base loss plus :math:`\varepsilon (1 - p_t)^{\gamma + 1}`.

    See the module docstring for the formula; the sum of :func:`poly1_components`, reduced
    once (the mean of the element-wise sums).

    Args:
        pred: logits. ``"multiclass"``: ``(N, C, ...)``, softmax over ``C``; ``"binary"``: any
            shape; ``"multilabel"``: ``(N, C, ...)``, one sigmoid per class.
        target: ``"multiclass"``: class indices ``(N, ...)``; ``"binary"``/``"multilabel"``:
            labels in [0, 1] shaped like ``pred``.
        mode: ``"multiclass"``, ``"binary"`` or ``"multilabel"``.
        epsilon: :math:`\varepsilon \ge -1`, the added weight of the first polynomial term.
        gamma: focusing parameter :math:`\gamma \ge 0`; 0 gives Poly-1 cross-entropy.
        alpha: class balancing of the base term, as :func:`lossplug.functional.focal` takes it.
        ignore_index: target value whose elements are left out of the loss and the mean.
        reduction: ``"mean"`` (over non-ignored elements), ``"sum"`` or ``"none"``.

    Returns:
        The loss.

    Example:
        >>> import torch
        >>> from lossplug.functional import poly1
        >>> poly1(torch.zeros(2, 4), torch.tensor([0, 3]), epsilon=1.0)  # log 4 + 3/4
        tensor(2.1363)
    """
    base, kept, poly = _poly1_elements(
        pred, target, mode, epsilon, gamma, alpha, ignore_index, reduction
    )
    return reduce_loss(base + poly, reduction, kept)


def poly1_components(
    pred: Tensor,
    target: Tensor,
    mode: str = "multiclass",
    epsilon: float = 1.0,
    gamma: float = 0.0,
    alpha: float | Tensor | list[float] | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> dict[str, Tensor]:
    r"""Poly-1's two terms: the base loss and :math:`\varepsilon (1 - p_t)^{\gamma + 1}`.

    Arguments as in :func:`poly1`.

    Returns:
        ``{"ce": ..., "poly": ...}`` at ``gamma=0``, ``{"focal": ..., "poly": ...}`` otherwise,
        each reduced as ``reduction`` says (means over the same kept elements, so they add up
        to :func:`poly1`).
    """
    base, kept, poly = _poly1_elements(
        pred, target, mode, epsilon, gamma, alpha, ignore_index, reduction
    )
    return {
        poly1_base_name(gamma): reduce_loss(base, reduction, kept),
        "poly": reduce_loss(poly, reduction, kept),
    }


def _poly1_elements(
    pred: Tensor,
    target: Tensor,
    mode: str,
    epsilon: float,
    gamma: float,
    alpha: float | Tensor | list[float] | None,
    ignore_index: int | None,
    reduction: str,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    r"""The element-wise base loss, the kept mask and :math:`\varepsilon (1 - p_t)^{\gamma + 1}`.

    Options and inputs are checked here (:func:`~lossplug.functional.focal.focal_elements`,
    which returns the term, a tensor, since ``poly`` is given).
    """
    name = "poly1"
    epsilon = check_number(name, "epsilon", epsilon, minimum=-1.0)
    return focal_elements(
        name, pred, target, mode, gamma, alpha, ignore_index, reduction, poly=epsilon
    )


def poly1_base_name(gamma: float) -> str:
    """The base term's component name: ``"ce"`` at ``gamma == 0``, else ``"focal"``."""
    return "ce" if gamma == 0.0 else "focal"
