"""Generalized Dice loss: MONAI's values, empty classes, ignored positions, gradients, errors."""

from __future__ import annotations

import monai.losses
import pytest
import torch
import torch.nn.functional as TF

from lossplug.functional.overlap import generalized_dice
from lossplug.losses import GeneralizedDiceLoss
from lossplug.registry import build_loss

N, C, H, W = 3, 4, 5, 6
WEIGHT_TYPES = ["square", "simple", "uniform"]


def multiclass_data(seed: int = 0, dtype: torch.dtype = torch.float64):
    """Logits and class indices; class 3 is absent from sample 0 (an infinite weight there)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, H, W, generator=gen, dtype=dtype) * 2
    labels = torch.randint(0, C, (N, H, W), generator=gen)
    labels[0] = labels[0].remainder(C - 1)
    return logits, labels


def sigmoid_data(channels: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, channels, H, W, generator=gen, dtype=torch.float64) * 2
    target = (torch.rand(N, channels, H, W, generator=gen) > 0.6).double()
    target[0, 0] = 0  # an empty mask
    return logits, target


@pytest.mark.parametrize("weight_type", WEIGHT_TYPES)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_monai_multiclass(weight_type, batch, include_background, reduction):
    logits, labels = multiclass_data(1)
    options = {
        "batch": batch,
        "include_background": include_background,
        "reduction": reduction,
        "smooth_nr": 1e-4,
        "smooth_dr": 1e-3,
    }
    reference = monai.losses.GeneralizedDiceLoss(
        softmax=True, to_onehot_y=True, w_type=weight_type, **options
    )(logits, labels[:, None])
    actual = generalized_dice(logits, labels, weight_type=weight_type, **options)
    torch.testing.assert_close(actual, reference.reshape(actual.shape), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("weight_type", WEIGHT_TYPES)
@pytest.mark.parametrize(("mode", "channels"), [("binary", 1), ("multilabel", C)])
def test_matches_monai_sigmoid(weight_type, mode, channels):
    logits, target = sigmoid_data(channels, seed=2)
    reference = monai.losses.GeneralizedDiceLoss(sigmoid=True, w_type=weight_type)
    actual = generalized_dice(logits, target, mode=mode, weight_type=weight_type)
    torch.testing.assert_close(actual, reference(logits, target), rtol=1e-6, atol=1e-7)


def test_matches_monai_on_probabilities_and_soft_targets():
    logits, labels = multiclass_data(3)
    probs = logits.softmax(1)
    soft = (0.8 * TF.one_hot(labels, C).movedim(-1, 1) + 0.05).double()
    reference = monai.losses.GeneralizedDiceLoss()(probs, soft)  # I = sum p t
    actual = generalized_dice(probs, soft, input="probs")
    torch.testing.assert_close(actual, reference, rtol=1e-6, atol=1e-7)


def test_an_absent_class_takes_the_largest_weight_of_its_sample():
    # sample 0 lacks class 3: its weight is the largest of the others, 1/min(T)^2
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.2, 0.7, 0.8], [0.1, 0.1, 0.1]]]).double()
    labels = torch.tensor([[0, 1, 1]])
    weight = torch.tensor([1.0, 1 / 4, 1.0]).double()  # T = (1, 2, 0)
    inter = torch.tensor([0.7, 1.5, 0.0]).double()
    total = torch.tensor([1.0 + 1, 1.7 + 2, 0.3]).double()
    expected = 1 - (2 * weight @ inter) / (weight @ total)
    actual = generalized_dice(probs, labels, input="probs", smooth_nr=0.0, smooth_dr=0.0)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("smoothing", [0.0, 1e-5])
@pytest.mark.parametrize("weight_type", ["square", "simple"])
def test_an_empty_target_gives_zero_not_nan(smoothing, weight_type):
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    target = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    value = generalized_dice(
        logits,
        target,
        mode="multilabel",
        weight_type=weight_type,
        smooth_nr=smoothing,
        smooth_dr=smoothing,
    )
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(logits.grad).all()
    if smoothing:
        reference = monai.losses.GeneralizedDiceLoss(sigmoid=True, w_type=weight_type)
        torch.testing.assert_close(value, reference(logits, target))


def test_ignored_positions_are_left_out():
    logits, labels = multiclass_data(4)
    ignored = labels.clone()
    ignored[:, 0] = 255
    kept = (ignored != 255).unsqueeze(1)
    probs = torch.where(kept, logits.softmax(1), 0)  # the prediction's mass there is left out
    one_hot = torch.where(kept, TF.one_hot(labels, C).movedim(-1, 1), 0).double()
    expected = generalized_dice(probs, one_hot, input="probs")
    torch.testing.assert_close(generalized_dice(logits, ignored, ignore_index=255), expected)


@pytest.mark.parametrize("weight_type", WEIGHT_TYPES)
@pytest.mark.parametrize("batch", [False, True])
def test_gradcheck(weight_type, batch):
    logits, labels = multiclass_data(5)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: generalized_dice(z, labels, weight_type=weight_type, batch=batch), (logits,)
    )


@pytest.mark.parametrize(("options", "shape"), [({}, (N,)), ({"batch": True}, (1,))])
def test_reduction_none_gives_one_loss_per_sample_or_batch(options, shape):
    logits, labels = multiclass_data()
    unreduced = generalized_dice(logits, labels, reduction="none", **options)
    assert unreduced.shape == shape
    torch.testing.assert_close(generalized_dice(logits, labels, **options), unreduced.mean())


def test_module_matches_functional_keeps_options_and_decides_auto_mode():
    logits, labels = multiclass_data(6)
    loss = build_loss("generalized_dice", weight_type="simple", ignore_index=0, mode="auto")
    assert isinstance(loss, GeneralizedDiceLoss)
    expected = generalized_dice(logits, labels, weight_type="simple", ignore_index=0)
    torch.testing.assert_close(loss(logits, labels), expected)
    assert loss.mode == "multiclass"
    assert loss.components(logits, labels) == {"generalized_dice": loss(logits, labels)}
    assert "weight_type='simple'" in repr(loss)
    assert GeneralizedDiceLoss(input="probs").input_space == "probs"


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"weight_type": "log"}, ValueError, "generalized_dice: option 'weight_type'"),
        ({"smooth_nr": -1.0}, ValueError, "generalized_dice: option 'smooth_nr'"),
        ({"mode": "multi"}, ValueError, "generalized_dice: option 'mode'"),
        ({"reduction": "batchmean"}, ValueError, "generalized_dice: option 'reduction'"),
    ],
)
def test_bad_options_fail_at_construction_and_call(options, error, match):
    with pytest.raises(error, match=match):
        GeneralizedDiceLoss(**options)
    logits, labels = multiclass_data()
    with pytest.raises(error, match=match):
        generalized_dice(logits, labels, **options)


def test_bad_targets_name_the_loss():
    logits, labels = multiclass_data()
    with pytest.raises(ValueError, match="generalized_dice: class index 4"):
        generalized_dice(logits, labels + 1)
    with pytest.raises(ValueError, match="generalized_dice: multilabel 'target' must hold"):
        generalized_dice(logits, torch.full_like(logits, 2.0), mode="multilabel")
