r"""Lovász losses: convex surrogates of the Jaccard (IoU) loss, Lovász-softmax and Lovász hinge.

Berman, Triki & Blaschko 2018, "The Lovász-Softmax loss: a tractable surrogate for the
optimization of the intersection-over-union measure in neural networks".

Both optimise the Jaccard index (IoU) through its Lovász extension. For a vector of
non-negative errors :math:`m \in \mathbb{R}^S` over the positions of one class and its
foreground :math:`g \in \{0, 1\}^S`, sort the errors in decreasing order,
:math:`m_{\pi_1} \ge \dots \ge m_{\pi_S}`; with the Jaccard loss of the first :math:`i`
positions counted as mistakes,

.. math::

    J_i = 1 - \frac{|g| - \sum_{k \le i} g_{\pi_k}}{|g| + \sum_{k \le i} (1 - g_{\pi_k})},
    \qquad \overline{\Delta_J}(m) = \sum_{i=1}^{S} m_{\pi_i} \, (J_i - J_{i-1}),
    \quad J_0 = 0,

a piecewise-linear convex surrogate equal to the Jaccard loss wherever :math:`m \in \{0, 1\}^S`.
:math:`J` depends on the target only: the gradient flows through the errors.

Positions whose target is ``ignore_index`` take no part: their error is 0 and they are no
foreground, so they sort last and add nothing (the extension over the kept positions). With
``per_image=True`` each image is one vector and the loss is averaged over the images; with
``per_image=False`` the whole batch is one vector, and ``reduction="none"`` returns a ``(1,)``
tensor.

Precision: float16/bfloat16 inputs are computed in float32; the loss is float32.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lossplug._precision import at_least_float32
from lossplug._validation import (
    check_binary_values,
    check_bool,
    check_choice,
    check_class_target,
    check_floating,
    check_index_option,
    check_min_dims,
    check_reduction,
    check_same_shape,
    check_unit_interval,
)
from lossplug.functional._reduce import reduce_loss
from lossplug.functional._shapes import flatten_from

InputKind = Literal["logits", "probs"]
Classes = Literal["present", "all"]
INPUTS: tuple[str, ...] = ("logits", "probs")
CLASSES: tuple[str, ...] = ("present", "all")


def lovasz_softmax(
    pred: Tensor,
    target: Tensor,
    *,
    input: InputKind = "logits",
    per_image: bool = False,
    classes: Classes = "present",
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Lovász-softmax loss: the Lovász extension of each class's Jaccard loss, averaged.

    With :math:`p_{c,s}` the softmax probabilities and :math:`g_{c,s} = [y_s = c]`, class
    :math:`c`'s errors are :math:`m_{c,s} = |g_{c,s} - p_{c,s}|` and

    .. math::

        L = \frac{1}{|\mathcal{C}|} \sum_{c \in \mathcal{C}} \overline{\Delta_{J_c}}(m_c)

    (see the module docstring), over each image (``per_image=True``) or the whole batch.
    :math:`\mathcal{C}` holds every class (``classes="all"``) or those present in the kept
    target (``"present"``, the reference implementation's default); a group with no present
    class loses 0. Berman, Triki & Blaschko 2018, "The Lovász-Softmax loss".

    The reference implementation (``lovasz_softmax(probas, labels, classes, per_image,
    ignore)``) takes probabilities: that is ``input="probs"`` here. kornia's
    ``lovasz_softmax_loss`` is ``per_image=True, classes="all"`` without ``ignore_index``.

    Args:
        pred: logits (or probabilities with ``input="probs"``) of shape ``(N, C, *)``,
            ``C >= 2``.
        target: class indices of shape ``(N, *)``, an integer tensor.
        input: ``"logits"`` (softmax over dim 1 applied here) or ``"probs"``.
        per_image: one loss per image, averaged; ``False`` (the reference's default) pools
            the batch's positions.
        classes: ``"present"`` or ``"all"``.
        ignore_index: target value whose positions are left out.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the images (``(N,)``), or of the
            one batch loss (``(1,)``) with ``per_image=False``.

    Returns:
        The loss; float32 for float16/bfloat16 ``pred``.

    Example:
        >>> import torch
        >>> from lossplug.functional import lovasz_softmax
        >>> probs = torch.tensor([[[0.9, 0.2, 0.4], [0.1, 0.8, 0.6]]])  # (N, C, positions)
        >>> lovasz_softmax(probs, torch.tensor([[0, 1, 1]]), input="probs")
        tensor(0.2833)
    """
    name = "lovasz_softmax"
    check_lovasz_softmax_options(
        name, input=input, per_image=per_image, classes=classes, ignore_index=ignore_index
    )
    check_reduction(name, reduction)
    check_floating(name, "pred", pred, "logits" if input == "logits" else "probabilities")
    if isinstance(target, Tensor) and target.is_floating_point():
        raise TypeError(
            f"{name}: 'target' must hold class indices (an integer tensor of shape (N, *)), "
            f"got a {target.dtype} tensor"
        )
    check_class_target(name, pred, target, ignore_index)
    if pred.shape[1] < 2:
        raise ValueError(
            f"{name}: 'pred' must have at least 2 classes along dim 1, got shape "
            f"{tuple(pred.shape)}; for one channel of binary logits use lovasz_hinge"
        )
    if input == "probs":
        check_unit_interval(name, "pred", pred, "probabilities")
    scores = flatten_from(at_least_float32(pred), 2)  # (N, C, S)
    probs = scores.softmax(1) if input == "logits" else scores
    labels = flatten_from(target, 1)  # (N, S)
    kept = None if ignore_index is None else labels != ignore_index
    if not per_image:  # one group: (1, C, N * S)
        probs = probs.transpose(0, 1).flatten(1).unsqueeze(0)
        labels = labels.reshape(1, -1)
        kept = None if kept is None else kept.reshape(1, -1)
    class_ids = torch.arange(probs.shape[1], device=labels.device).view(1, -1, 1)
    foreground = labels.unsqueeze(1) == class_ids  # (G, C, S)
    if kept is not None:
        foreground &= kept.unsqueeze(1)
    errors = (foreground.to(probs.dtype) - probs).abs()
    if kept is not None:
        errors = torch.where(kept.unsqueeze(1), errors, 0)
    per_class = lovasz_extension(errors, foreground)  # (G, C)
    if classes == "all":
        loss = per_class.mean(1)
    else:
        present = foreground.any(-1).to(per_class.dtype)
        loss = (per_class * present).sum(1) / present.sum(1).clamp_min(1)
    return reduce_loss(loss, reduction)


def lovasz_hinge(
    pred: Tensor,
    target: Tensor,
    *,
    per_image: bool = True,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Lovász hinge loss: the Lovász extension of the binary Jaccard loss of hinge errors.

    With logits :math:`z_s`, signs :math:`\sigma_s = 2 y_s - 1` and hinge errors
    :math:`m_s = \max(0, 1 - \sigma_s z_s)`, the loss is
    :math:`\overline{\Delta_J}(m)` for the foreground :math:`y` (see the module docstring),
    over each image (``per_image=True``, the reference's default) or the whole batch.
    Berman, Triki & Blaschko 2018, "The Lovász-Softmax loss".

    An image of no foreground still has a loss (its Jaccard loss is 1 for any false
    positive), as in the reference implementation and kornia's ``lovasz_hinge_loss``, which
    is ``per_image=True`` without ``ignore_index``.

    Args:
        pred: binary logits of shape ``(N, *)`` or ``(N, 1, *)``.
        target: the same shape, values in {0, 1} (or ``ignore_index``).
        per_image: one loss per image, averaged; ``False`` pools the batch's positions.
        ignore_index: target value whose positions are left out.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the images (``(N,)``), or of the
            one batch loss (``(1,)``) with ``per_image=False``.

    Returns:
        The loss; float32 for float16/bfloat16 ``pred``.

    Example:
        >>> import torch
        >>> from lossplug.functional import lovasz_hinge
        >>> logits = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
        >>> lovasz_hinge(logits, torch.tensor([[1, 0, 0, 0]]))
        tensor(0.7500)
    """
    name = "lovasz_hinge"
    check_lovasz_options(name, per_image=per_image, ignore_index=ignore_index)
    check_reduction(name, reduction)
    check_floating(name, "pred", pred, "logits")
    if not isinstance(target, Tensor):
        raise TypeError(f"{name}: 'target' must be a torch.Tensor, got {type(target).__name__}")
    check_min_dims(name, "pred", pred, 1, "(N, *) or (N, 1, *) of binary logits")
    check_same_shape(name, pred, target)
    check_binary_values(name, target, "binary", ignore_index)
    logits = flatten_from(at_least_float32(pred), 1)  # (N, S)
    labels = flatten_from(target, 1)
    if not per_image:
        logits, labels = logits.reshape(1, -1), labels.reshape(1, -1)
    foreground = labels == 1
    signs = foreground.to(logits.dtype) * 2 - 1
    errors = (1 - logits * signs).relu()
    if ignore_index is not None:
        kept = labels != ignore_index
        errors = torch.where(kept, errors, 0)
        foreground &= kept
    loss = lovasz_extension(errors.unsqueeze(1), foreground.unsqueeze(1)).squeeze(1)
    return reduce_loss(loss, reduction)


def lovasz_extension(errors: Tensor, foreground: Tensor) -> Tensor:
    r"""The Lovász extension of the Jaccard loss, :math:`\overline{\Delta_J}`, along the last dim.

    Args:
        errors: non-negative errors ``(..., S)``.
        foreground: the target's foreground, a bool tensor of the same shape.

    Returns:
        One value per vector, shape ``(...)``.
    """
    errors_sorted, order = errors.sort(dim=-1, descending=True)
    found = foreground.gather(-1, order).cumsum(-1, dtype=errors.dtype)  # of g in the first i
    total = found[..., -1:]
    ranks = torch.arange(1, errors.shape[-1] + 1, device=errors.device, dtype=errors.dtype)
    # counts are exact in float32 below 2**24 positions; the union is at least 1
    missed = total - found
    jaccard = 1 - missed / (ranks - found).add_(total)
    increments = torch.diff(jaccard, dim=-1, prepend=jaccard.new_zeros(*jaccard.shape[:-1], 1))
    return (errors_sorted * increments).sum(-1)


def check_lovasz_softmax_options(
    loss: str, *, input: str, per_image: bool, classes: str, ignore_index: int | None
) -> None:
    """Validate the Lovász-softmax options (also run by the module's constructor).

    Raises:
        ValueError: for an unknown ``input`` or ``classes``.
        TypeError: for a ``per_image`` that is not a bool or an ``ignore_index`` that is not
            an int.
    """
    check_choice(loss, "input", input, INPUTS)
    check_choice(loss, "classes", classes, CLASSES)
    check_lovasz_options(loss, per_image=per_image, ignore_index=ignore_index)


def check_lovasz_options(loss: str, *, per_image: bool, ignore_index: int | None) -> None:
    """Validate the options both Lovász losses share (also run by the modules' constructors).

    Raises:
        TypeError: for a ``per_image`` that is not a bool or an ``ignore_index`` that is not
            an int.
    """
    check_bool(loss, "per_image", per_image)
    check_index_option(loss, "ignore_index", ignore_index, optional=True)
