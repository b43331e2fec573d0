"""Property-based tests (hypothesis) of every loss of the catalogue.

Over drawn shapes, class counts, options and values, every loss is

- **finite**, with finite gradients, for finite inputs (logits up to ±100, regression values up
  to ±1000, probabilities including exact 0 and 1, duplicate embeddings);
- **non-negative**: every loss here is, mathematically (Poly-1 for epsilon >= -1 without alpha),
  so the only slack is float32 rounding (:data:`ROUNDING`);
- **zero at a perfect prediction** where the math says so: the regression losses at
  ``pred == target`` (Charbonnier with ``subtract_eps=True``; the quantile loss with every
  level's column equal to the target); BCE, Dice, generalized Dice,
  Tversky and Lovász-softmax with ``input="probs"`` at the target itself (one-hot
  probabilities for class indices); Lovász hinge when every logit clears the margin 1; KL at
  ``pred = log_softmax(z)``, ``target = softmax(z)``; hinge when every score clears the
  margin; triplet and contrastive when each class sits on its own point, farther from the
  others than the margins.
  InfoNCE and SupCon are never 0 at a finite temperature (SupCon's least value is
  log |P(i)|), and are checked for the other properties only.
  Cross-entropy, focal and Poly-1 loss are **not** zero at any finite logits; their value at the
  margin-``m`` logits ``m * one_hot(y)`` is checked against its closed form instead, positive
  and shrinking as ``m`` grows. The composite (Dice + cross-entropy) inherits that;
- **invariant to batch order**: permuting the batch (embeddings and labels together for the
  metric-learning losses) leaves ``mean`` and ``sum`` unchanged;
- **0 on an empty batch**, ``mean`` and ``sum`` alike, and back-propagates: a mean over no
  element is 0 by lossplug's convention (never NaN), and a batch-Dice/Tversky class that is
  absent from both an empty prediction and an empty target scores 1 (loss 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor

import lossplug
from lossplug import CompositeLoss, LossModule, build_loss

#: float32 rounding allowed below 0 (non-negativity) and above 0 (perfect predictions).
ROUNDING = 1e-4

SETTINGS = settings(max_examples=25, deadline=None, database=None, derandomize=True)


# -- drawing tensors -----------------------------------------------------------------------


def _floats(data: st.DataObject, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    elements = st.floats(low, high, width=32, allow_subnormal=False)
    return torch.from_numpy(data.draw(arrays(np.float32, shape, elements=elements)).copy())


def _labels(data: st.DataObject, shape: tuple[int, ...], classes: int) -> Tensor:
    elements = st.integers(0, classes - 1)
    return torch.from_numpy(data.draw(arrays(np.int64, shape, elements=elements)).copy())


def _binary(data: st.DataObject, shape: tuple[int, ...]) -> Tensor:
    return _labels(data, shape, 2).float()


def _size(data: st.DataObject, low: int, high: int, label: str) -> int:
    return data.draw(st.integers(low, high), label=label)


def _spatial(data: st.DataObject) -> tuple[int, ...]:
    return tuple(data.draw(st.lists(st.integers(1, 3), max_size=2), label="spatial"))


def _reduction(data: st.DataObject) -> str:
    return data.draw(st.sampled_from(["mean", "sum"]), label="reduction")


Drawn = tuple[LossModule, Tensor, Tensor]


@dataclass(frozen=True)
class Family:
    """How to draw a loss with its options and inputs, and inputs it scores 0 (if any)."""

    draw: Callable[[st.DataObject], Drawn]
    perfect: Callable[[st.DataObject], Drawn] | None


# -- regression ----------------------------------------------------------------------------


def _regression(name: str, option: str | None = None, **fixed: object) -> Family:
    def loss(data: st.DataObject) -> LossModule:
        options = {"reduction": _reduction(data), **fixed}
        if option is not None:
            low = 0.0 if option == "beta" else 0.01
            options[option] = data.draw(st.floats(low, 5.0), label=option)
        return build_loss(name, **options)

    def shape(data: st.DataObject) -> tuple[int, ...]:
        return (_size(data, 1, 5, "n"), *_spatial(data))

    def draw(data: st.DataObject) -> Drawn:
        size = shape(data)
        return loss(data), _floats(data, size, -1e3, 1e3), _floats(data, size, -1e3, 1e3)

    def perfect(data: st.DataObject) -> Drawn:
        target = _floats(data, shape(data), -1e3, 1e3)
        return loss(data), target.clone(), target

    return Family(draw, perfect)


def _quantile_family() -> Family:
    """1 to 4 increasing levels; ``pred`` ``(n, *spatial, Q)``, ``target`` ``(n, *spatial)``."""

    def loss(data: st.DataObject) -> LossModule:
        levels = data.draw(
            st.lists(st.floats(0.001, 0.999), min_size=1, max_size=4, unique=True), label="levels"
        )
        return build_loss("quantile", quantiles=sorted(levels), reduction=_reduction(data))

    def draw(data: st.DataObject) -> Drawn:
        criterion = loss(data)
        items = (_size(data, 1, 5, "n"), *_spatial(data))
        pred = _floats(data, (*items, len(criterion.quantiles)), -1e3, 1e3)
        return criterion, pred, _floats(data, items, -1e3, 1e3)

    def perfect(data: st.DataObject) -> Drawn:
        criterion = loss(data)
        target = _floats(data, (_size(data, 1, 5, "n"), *_spatial(data)), -1e3, 1e3)
        pred = target.unsqueeze(-1).expand(*target.shape, len(criterion.quantiles))
        return criterion, pred.clone(), target

    return Family(draw, perfect)


# -- classification ------------------------------------------------------------------------


def _class_shape(data: st.DataObject) -> tuple[int, int, tuple[int, ...]]:
    return _size(data, 1, 5, "n"), _size(data, 2, 4, "classes"), _spatial(data)


def _cross_entropy(data: st.DataObject) -> Drawn:
    n, c, spatial = _class_shape(data)
    # weights of 0 too: every kept target may weigh 0 (the mean is then 0, its gradient too)
    weight = data.draw(st.none() | st.lists(st.floats(0.0, 2.0), min_size=c, max_size=c))
    loss = build_loss(
        "cross_entropy",
        weight=weight,
        label_smoothing=data.draw(st.floats(0.0, 1.0), label="label_smoothing"),
        reduction=_reduction(data),
    )
    target = _labels(data, (n, *spatial), c)
    ignored = _binary(data, target.shape).bool()  # ignore_index (-100) here and there
    return loss, _floats(data, (n, c, *spatial), -100, 100), target.masked_fill(ignored, -100)


def _bce_loss(data: st.DataObject, input: str) -> LossModule:
    pos_weight = data.draw(st.none() | st.floats(0.0, 5.0), label="pos_weight")
    return build_loss("bce", input=input, pos_weight=pos_weight, reduction=_reduction(data))


def _bce(data: st.DataObject) -> Drawn:
    shape = (_size(data, 1, 5, "n"), *_spatial(data))
    input = data.draw(st.sampled_from(["logits", "probs"]), label="input")
    low, high = (-100.0, 100.0) if input == "logits" else (0.0, 1.0)  # probabilities 0 and 1 too
    pred = _floats(data, shape, low, high)
    target = _floats(data, shape, 0.0, 1.0)  # soft labels, 0 and 1 included
    return _bce_loss(data, input), pred, target


def _bce_perfect(data: st.DataObject) -> Drawn:
    target = _binary(data, (_size(data, 1, 5, "n"), *_spatial(data)))
    return _bce_loss(data, "probs"), target.clone(), target


def _kl_loss(data: st.DataObject, temperature: float | None = None) -> LossModule:
    if temperature is None:
        temperature = data.draw(st.sampled_from([1.0, 0.5, 2.5]), label="temperature")
    reduction = data.draw(st.sampled_from(["mean", "batchmean", "sum"]), label="reduction")
    return build_loss("kl_div", temperature=temperature, reduction=reduction)


def _kl_div(data: st.DataObject) -> Drawn:
    n, c, spatial = _class_shape(data)
    shape = (n, c, *spatial)
    pred = _floats(data, shape, -30, 30).log_softmax(1)
    if data.draw(st.booleans(), label="one-hot target"):
        target = F.one_hot(_labels(data, (n, *spatial), c), c).movedim(-1, 1).float()
    else:
        target = _floats(data, shape, -30, 30).softmax(1)
    return _kl_loss(data), pred, target


def _kl_div_perfect(data: st.DataObject) -> Drawn:
    n, c, spatial = _class_shape(data)
    logits = _floats(data, (n, c, *spatial), -30, 30)
    return _kl_loss(data, temperature=1.0), logits.log_softmax(1), logits.softmax(1)


def _hinge_loss(data: st.DataObject, mode: str) -> LossModule:
    margin = data.draw(st.floats(0.0, 3.0), label="margin")
    squared = data.draw(st.booleans(), label="squared")
    return build_loss(
        "hinge", mode=mode, margin=margin, squared=squared, reduction=_reduction(data)
    )


def _hinge(data: st.DataObject) -> Drawn:
    mode = data.draw(st.sampled_from(["binary", "multiclass"]), label="mode")
    n, c, spatial = _class_shape(data)
    if mode == "multiclass":
        target = _labels(data, (n, *spatial), c)
        return _hinge_loss(data, mode), _floats(data, (n, c, *spatial), -100, 100), target
    target = _binary(data, (n, *spatial))
    if data.draw(st.booleans(), label="labels in {-1, 1}"):
        target = 2 * target - 1
    return _hinge_loss(data, mode), _floats(data, (n, *spatial), -100, 100), target


def _hinge_perfect(data: st.DataObject) -> Drawn:
    mode = data.draw(st.sampled_from(["binary", "multiclass"]), label="mode")
    loss = _hinge_loss(data, mode)
    n, c, spatial = _class_shape(data)
    extra = _floats(data, (n, *spatial), 0, 10)  # every score clears the margin by this
    if mode == "multiclass":
        target = _labels(data, (n, *spatial), c)
        one_hot = F.one_hot(target, c).movedim(-1, 1).float()
        return loss, one_hot * (loss.margin + 1 + extra.unsqueeze(1)), target
    target = _binary(data, (n, *spatial))
    return loss, (2 * target - 1) * (loss.margin + extra), target


def _focal_loss(data: st.DataObject, mode: str, classes: int) -> LossModule:
    gamma = data.draw(st.floats(0.0, 5.0), label="gamma")
    if mode == "multiclass":
        alpha = data.draw(
            st.none() | st.lists(st.floats(0.0, 1.0), min_size=classes, max_size=classes)
        )
    else:
        alpha = data.draw(st.none() | st.floats(0.0, 1.0), label="alpha")
    return build_loss("focal", mode=mode, gamma=gamma, alpha=alpha, reduction=_reduction(data))


def _focal(data: st.DataObject) -> Drawn:
    mode = data.draw(st.sampled_from(["binary", "multilabel", "multiclass"]), label="mode")
    n, c, spatial = _class_shape(data)
    pred = _floats(data, (n, c, *spatial), -100, 100)
    if mode == "multiclass":
        return _focal_loss(data, mode, c), pred, _labels(data, (n, *spatial), c)
    return _focal_loss(data, mode, c), pred, _floats(data, pred.shape, 0.0, 1.0)


def _poly1(data: st.DataObject) -> Drawn:
    mode = data.draw(st.sampled_from(["binary", "multilabel", "multiclass"]), label="mode")
    n, c, spatial = _class_shape(data)
    pred = _floats(data, (n, c, *spatial), -100, 100)
    # epsilon >= -1 keeps Poly-1 non-negative without alpha: -log p_t >= 1 - p_t
    loss = build_loss(
        "poly1",
        mode=mode,
        epsilon=data.draw(st.floats(-1.0, 5.0), label="epsilon"),
        gamma=data.draw(st.floats(0.0, 5.0), label="gamma"),
        reduction=_reduction(data),
    )
    if mode == "multiclass":
        return loss, pred, _labels(data, (n, *spatial), c)
    return loss, pred, _floats(data, pred.shape, 0.0, 1.0)


def _asymmetric(data: st.DataObject) -> Drawn:
    n, c, spatial = _class_shape(data)
    loss = build_loss(
        "asymmetric",
        gamma_pos=data.draw(st.floats(0.0, 5.0), label="gamma_pos"),
        gamma_neg=data.draw(st.floats(0.0, 5.0), label="gamma_neg"),
        clip=data.draw(st.floats(0.0, 1.0), label="clip"),
        reduction=_reduction(data),
    )
    pred = _floats(data, (n, c, *spatial), -100, 100)
    return loss, pred, _floats(data, pred.shape, 0.0, 1.0)


# -- overlap -------------------------------------------------------------------------------


def _overlap_loss(data: st.DataObject, name: str, mode: str, input: str, c: int) -> LossModule:
    options = {
        "mode": mode,
        "input": input,
        "batch": data.draw(st.booleans(), label="batch"),
        "include_background": mode == "binary" or data.draw(st.booleans(), label="background"),
        "reduction": _reduction(data),
    }
    if name == "generalized_dice":
        options["weight_type"] = data.draw(st.sampled_from(["square", "simple", "uniform"]))
    elif name == "tversky":
        options["alpha"] = data.draw(st.floats(0.0, 1.0), label="alpha")
        options["beta"] = data.draw(st.floats(0.0, 1.0), label="beta")
        options["gamma"] = data.draw(st.floats(0.25, 3.0), label="gamma")
    else:
        options["jaccard"] = data.draw(st.booleans(), label="jaccard")
    return build_loss(name, **options)


def _overlap_shape(data: st.DataObject, mode: str) -> tuple[int, int, tuple[int, ...]]:
    n, c, _ = _class_shape(data)
    spatial = (_size(data, 1, 4, "height"), _size(data, 1, 4, "width"))
    return n, (1 if mode == "binary" else c), spatial


def _overlap(name: str) -> Family:
    modes = st.sampled_from(["binary", "multilabel", "multiclass"])

    def draw(data: st.DataObject) -> Drawn:
        mode = data.draw(modes, label="mode")
        input = data.draw(st.sampled_from(["logits", "probs"]), label="input")
        n, c, spatial = _overlap_shape(data, mode)
        shape = (n, c, *spatial)
        if input == "logits":
            pred = _floats(data, shape, -100, 100)
        else:
            pred = _floats(data, shape, -30, 30)
            pred = pred.softmax(1) if mode == "multiclass" else pred.sigmoid()
        index_target = mode == "multiclass"
        target = _labels(data, (n, *spatial), c) if index_target else _binary(data, shape)
        return _overlap_loss(data, name, mode, input, c), pred, target

    def perfect(data: st.DataObject) -> Drawn:
        mode = data.draw(modes, label="mode")
        n, c, spatial = _overlap_shape(data, mode)
        loss = _overlap_loss(data, name, mode, "probs", c)
        if mode == "multiclass":
            target = _labels(data, (n, *spatial), c)
            return loss, F.one_hot(target, c).movedim(-1, 1).float(), target
        target = _binary(data, (n, c, *spatial))
        return loss, target.clone(), target

    return Family(draw, perfect)


def _lovasz_softmax_loss(data: st.DataObject, input: str) -> LossModule:
    return build_loss(
        "lovasz_softmax",
        input=input,
        per_image=data.draw(st.booleans(), label="per_image"),
        classes=data.draw(st.sampled_from(["present", "all"]), label="classes"),
        reduction=_reduction(data),
    )


def _lovasz_softmax(data: st.DataObject) -> Drawn:
    input = data.draw(st.sampled_from(["logits", "probs"]), label="input")
    n, c, spatial = _overlap_shape(data, "multiclass")
    pred = _floats(data, (n, c, *spatial), -100, 100)
    if input == "probs":
        pred = pred.softmax(1)
    return _lovasz_softmax_loss(data, input), pred, _labels(data, (n, *spatial), c)


def _lovasz_softmax_perfect(data: st.DataObject) -> Drawn:
    n, c, spatial = _overlap_shape(data, "multiclass")
    target = _labels(data, (n, *spatial), c)
    one_hot = F.one_hot(target, c).movedim(-1, 1).float()
    return _lovasz_softmax_loss(data, "probs"), one_hot, target


def _lovasz_hinge_loss(data: st.DataObject) -> LossModule:
    per_image = data.draw(st.booleans(), label="per_image")
    return build_loss("lovasz_hinge", per_image=per_image, reduction=_reduction(data))


def _lovasz_hinge(data: st.DataObject) -> Drawn:
    n, _, spatial = _overlap_shape(data, "binary")
    pred = _floats(data, (n, *spatial), -100, 100)
    return _lovasz_hinge_loss(data), pred, _binary(data, pred.shape)


def _lovasz_hinge_perfect(data: st.DataObject) -> Drawn:
    n, _, spatial = _overlap_shape(data, "binary")
    target = _binary(data, (n, *spatial))
    extra = _floats(data, target.shape, 0, 10)  # every logit clears the margin 1 by this
    return _lovasz_hinge_loss(data), (2 * target - 1) * (1 + extra), target


# -- metric learning -----------------------------------------------------------------------


def _metric_loss(data: st.DataObject, name: str, distance: str) -> LossModule:
    reduction = _reduction(data)
    if name == "triplet":
        margin = data.draw(st.floats(0.0, 0.99), label="margin")
        mining = data.draw(st.sampled_from(["all", "batch_hard"]), label="mining")
        return build_loss(
            "triplet", margin=margin, mining=mining, distance=distance, reduction=reduction
        )
    pos_margin = data.draw(st.floats(0.0, 0.5), label="pos_margin")
    neg_margin = data.draw(st.floats(pos_margin, 1.0), label="neg_margin")
    return build_loss(
        "contrastive",
        pos_margin=pos_margin,
        neg_margin=neg_margin,
        distance=distance,
        squared=data.draw(st.booleans(), label="squared"),
        reduction=reduction,
    )


def _embeddings_and_labels(data: st.DataObject) -> tuple[Tensor, Tensor]:
    b, d = _size(data, 2, 8, "batch"), _size(data, 1, 4, "dim")
    embeddings = _floats(data, (b, d), -10, 10)  # duplicates and zero rows included
    return embeddings, _labels(data, (b,), _size(data, 1, 3, "classes"))


def _metric(name: str) -> Family:
    distances = st.sampled_from(["euclidean", "cosine"])

    def draw(data: st.DataObject) -> Drawn:
        embeddings, labels = _embeddings_and_labels(data)
        return _metric_loss(data, name, data.draw(distances, label="distance")), embeddings, labels

    def perfect(data: st.DataObject) -> Drawn:
        classes = _size(data, 1, 3, "classes")
        labels = _labels(data, (_size(data, 2, 8, "batch"),), classes)
        # each class on its own axis: same class at distance 0, others at 10√2 (cosine: 1)
        embeddings = 10.0 * F.one_hot(labels, classes).float()
        return _metric_loss(data, name, data.draw(distances, label="distance")), embeddings, labels

    return Family(draw, perfect)


def _temperature_scaled(name: str) -> Family:
    def draw(data: st.DataObject) -> Drawn:
        loss = build_loss(
            name,
            temperature=data.draw(st.floats(0.01, 2.0), label="temperature"),
            learn_temperature=data.draw(st.booleans(), label="learn_temperature"),
            reduction=_reduction(data),
        )
        return loss, *_embeddings_and_labels(data)

    return Family(draw, None)


# -- composite -----------------------------------------------------------------------------


def _dice_ce(data: st.DataObject) -> Drawn:
    n, c, spatial = _overlap_shape(data, "multiclass")
    weights = {
        "dice": data.draw(st.floats(0.0, 2.0), label="dice weight"),
        "ce": data.draw(st.floats(0.0, 2.0), label="ce weight"),
    }
    loss = CompositeLoss(
        {"dice": build_loss("dice"), "ce": build_loss("cross_entropy")}, weights=weights
    )
    return loss, _floats(data, (n, c, *spatial), -100, 100), _labels(data, (n, *spatial), c)


def _dice_ce_loss(data: st.DataObject) -> Drawn:
    n, c, spatial = _overlap_shape(data, "multiclass")
    loss = build_loss(
        "dice_ce",
        dice_weight=data.draw(st.floats(0.0, 2.0), label="dice weight"),
        ce_weight=data.draw(st.floats(0.0, 2.0), label="ce weight"),
    )
    return loss, _floats(data, (n, c, *spatial), -100, 100), _labels(data, (n, *spatial), c)


FAMILIES = {
    "mse": _regression("mse"),
    "l1": _regression("l1"),
    "huber": _regression("huber", "delta"),
    "smooth_l1": _regression("smooth_l1", "beta"),
    "charbonnier": _regression("charbonnier", "eps", subtract_eps=True),
    "quantile": _quantile_family(),
    "cross_entropy": Family(_cross_entropy, None),
    "bce": Family(_bce, _bce_perfect),
    "kl_div": Family(_kl_div, _kl_div_perfect),
    "hinge": Family(_hinge, _hinge_perfect),
    "focal": Family(_focal, None),
    "poly1": Family(_poly1, None),
    "asymmetric": Family(_asymmetric, None),
    "dice": _overlap("dice"),
    "tversky": _overlap("tversky"),
    "generalized_dice": _overlap("generalized_dice"),
    "lovasz_softmax": Family(_lovasz_softmax, _lovasz_softmax_perfect),
    "lovasz_hinge": Family(_lovasz_hinge, _lovasz_hinge_perfect),
    "triplet": _metric("triplet"),
    "contrastive": _metric("contrastive"),
    "infonce": _temperature_scaled("infonce"),
    "supcon": _temperature_scaled("supcon"),
    "composite": Family(_dice_ce, None),
    "dice_ce": Family(_dice_ce_loss, None),
}
WITH_PERFECT = [name for name, family in FAMILIES.items() if family.perfect is not None]


def test_every_loss_of_the_catalogue_has_properties():
    assert sorted(FAMILIES) == lossplug.available_losses()
    without = ["asymmetric", "composite", "cross_entropy", "dice_ce", "focal", "infonce"]
    without += ["poly1", "supcon"]
    assert sorted(set(FAMILIES) - set(WITH_PERFECT)) == without


def _value_and_grad(loss: LossModule, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    pred = pred.detach().requires_grad_()
    value = loss(pred, target)
    value.backward()
    return value.detach(), pred.grad


@pytest.mark.parametrize("name", FAMILIES)
@SETTINGS
@given(data=st.data())
def test_finite_with_finite_gradients_and_non_negative(name, data):
    loss, pred, target = FAMILIES[name].draw(data)
    value, grad = _value_and_grad(loss, pred, target)
    assert value.ndim == 0
    assert math.isfinite(value.item())
    assert bool(torch.isfinite(grad).all())
    assert value.item() >= -ROUNDING


@pytest.mark.parametrize("name", WITH_PERFECT)
@SETTINGS
@given(data=st.data())
def test_zero_at_a_perfect_prediction(name, data):
    loss, pred, target = FAMILIES[name].perfect(data)
    assert loss(pred, target).item() == pytest.approx(0.0, abs=ROUNDING)


@pytest.mark.parametrize("name", FAMILIES)
@SETTINGS
@given(data=st.data())
def test_invariant_to_batch_order(name, data):
    loss, pred, target = FAMILIES[name].draw(data)
    order = torch.tensor(data.draw(st.permutations(range(pred.shape[0])), label="order"))
    value = loss(pred, target)
    permuted = loss(pred[order], target[order])
    torch.testing.assert_close(permuted, value, rtol=1e-4, atol=1e-5)


# -- empty batches -------------------------------------------------------------------------


def _empty_index_batch(*spatial: int) -> tuple[Tensor, Tensor]:
    return torch.zeros(0, 3, *spatial), torch.zeros(0, *spatial, dtype=torch.long)


def _empty_overlap_cases(name: str) -> list[tuple[str, dict[str, object], Tensor, Tensor]]:
    flat = torch.zeros(0, 4, 4)
    multilabel = {"mode": "multilabel", "input": "probs"}
    return [
        case
        for batch in (False, True)
        for case in (
            (name, {"batch": batch}, *_empty_index_batch(4, 4)),
            (name, {"batch": batch, "mode": "binary"}, flat, flat),
            (name, {"batch": batch, **multilabel}, torch.zeros(0, 2, 3), torch.zeros(0, 2, 3)),
        )
    ]


EMPTY_BATCHES = [
    *[(name, {}, torch.zeros(0, 3), torch.zeros(0, 3)) for name in ("mse", "l1", "huber")],
    ("smooth_l1", {"beta": 0.5}, torch.zeros(0, 2, 2), torch.zeros(0, 2, 2)),
    ("cross_entropy", {}, *_empty_index_batch()),
    ("cross_entropy", {"weight": [1.0, 2.0, 0.5], "label_smoothing": 0.1}, *_empty_index_batch(4)),
    ("bce", {}, torch.zeros(0, 3), torch.zeros(0, 3)),
    ("kl_div", {}, torch.zeros(0, 3), torch.zeros(0, 3)),
    ("hinge", {"mode": "multiclass"}, *_empty_index_batch()),
    ("focal", {"mode": "multiclass"}, *_empty_index_batch(2)),
    ("poly1", {"mode": "multiclass", "gamma": 2.0}, *_empty_index_batch(2)),
    ("charbonnier", {"subtract_eps": True}, torch.zeros(0, 3), torch.zeros(0, 3)),
    ("quantile", {"quantiles": [0.2, 0.7]}, torch.zeros(0, 4, 2), torch.zeros(0, 4)),
    ("asymmetric", {"ignore_index": -1}, torch.zeros(0, 3), torch.zeros(0, 3)),
    *_empty_overlap_cases("dice"),
    *_empty_overlap_cases("tversky"),
    *_empty_overlap_cases("generalized_dice"),
    *[("lovasz_softmax", {"per_image": p}, *_empty_index_batch(4, 4)) for p in (False, True)],
    *[
        ("lovasz_hinge", {"per_image": p}, torch.zeros(0, 4, 4), torch.zeros(0, 4, 4))
        for p in (False, True)
    ],
    ("triplet", {}, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
    ("contrastive", {}, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
    ("infonce", {}, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
    ("supcon", {}, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
    ("composite", {}, *_empty_index_batch(4, 4)),
    ("dice_ce", {}, *_empty_index_batch(4, 4)),
]


def _empty_batch_loss(name: str, options: dict[str, object], reduction: str) -> LossModule:
    if name == "composite":  # Dice + cross-entropy, each term a mean
        return CompositeLoss({"dice": build_loss("dice"), "ce": build_loss("cross_entropy")})
    if name == "dice_ce":  # a mean only
        return build_loss("dice_ce")
    return build_loss(name, reduction=reduction, **options)


def test_every_loss_of_the_catalogue_has_an_empty_batch():
    assert sorted({case[0] for case in EMPTY_BATCHES}) == lossplug.available_losses()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(("name", "options", "pred", "target"), EMPTY_BATCHES)
def test_an_empty_batch_gives_zero_and_back_propagates(name, options, pred, target, reduction):
    pred = pred.clone().requires_grad_()
    value = _empty_batch_loss(name, options, reduction)(pred, target)
    value.backward()
    assert value.ndim == 0
    assert value.item() == 0.0
    assert pred.grad.shape == pred.shape


# -- losses that are never 0 at finite logits ----------------------------------------------


@SETTINGS
@given(
    classes=st.integers(2, 6),
    margin=st.floats(0.0, 12.0),
    target=st.integers(0, 5),
    n=st.integers(1, 4),
)
def test_cross_entropy_at_margin_logits_is_its_closed_form_and_positive(classes, margin, target, n):
    labels = torch.full((n,), target % classes)
    logits = margin * F.one_hot(labels, classes).double()
    expected = math.log1p((classes - 1) * math.exp(-margin))  # -log softmax at the true class
    value = build_loss("cross_entropy")(logits, labels).item()
    assert value == pytest.approx(expected, rel=1e-9)
    assert value > 0.0


@SETTINGS
@given(classes=st.integers(2, 6), margin=st.floats(0.0, 12.0), gamma=st.floats(0.0, 4.0))
def test_focal_at_margin_logits_is_its_closed_form_and_positive(classes, margin, gamma):
    labels = torch.arange(4) % classes
    logits = margin * F.one_hot(labels, classes).double()
    p_true = 1.0 / (1.0 + (classes - 1) * math.exp(-margin))
    expected = (1.0 - p_true) ** gamma * -math.log(p_true)
    value = build_loss("focal", mode="multiclass", gamma=gamma)(logits, labels).item()
    assert value == pytest.approx(expected, rel=1e-9)
    assert value > 0.0


def test_cross_entropy_and_focal_shrink_towards_zero_as_the_margin_grows():
    labels = torch.tensor([0, 1, 2])
    for loss in (build_loss("cross_entropy"), build_loss("focal", mode="multiclass")):
        values = [loss(m * F.one_hot(labels, 3).double(), labels).item() for m in (1, 4, 16)]
        assert values[0] > values[1] > values[2] > 0.0


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_gradient_is_finite_when_every_kept_weight_is_zero(label_smoothing):
    logits = torch.zeros(3, 2, requires_grad=True)
    loss = build_loss("cross_entropy", weight=[0.0, 1.0], label_smoothing=label_smoothing)
    value = loss(logits, torch.zeros(3, dtype=torch.long))
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros(3, 2))


@pytest.mark.parametrize(("prob", "label"), [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)])
def test_bce_gradient_is_finite_at_probabilities_0_and_1(prob, label):
    pred = torch.tensor([prob], requires_grad=True)
    loss = build_loss("bce", input="probs")(pred, torch.tensor([label]))
    loss.backward()
    assert loss.item() == pytest.approx(0.0 if prob == label else 100.0)
    assert bool(torch.isfinite(pred.grad).all())
