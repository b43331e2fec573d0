"""CompositeLoss: named terms, fixed weights, total formed once from the components."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lossplug.composite import CompositeLoss
from lossplug.losses import CrossEntropyLoss, DiceLoss, HuberLoss, L1Loss, MSELoss
from lossplug.registry import build_loss


def data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)


def test_components_are_the_unweighted_terms_and_the_total_is_their_weighted_sum():
    pred, target = data()
    loss = CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weights={"mse": 2.0, "l1": 0.5})
    components = loss.components(pred, target)
    assert list(components) == ["mse", "l1"]
    torch.testing.assert_close(components["mse"], F.mse_loss(pred, target))
    torch.testing.assert_close(components["l1"], F.l1_loss(pred, target))
    expected = 2.0 * F.mse_loss(pred, target) + 0.5 * F.l1_loss(pred, target)
    torch.testing.assert_close(loss(pred, target), expected)
    torch.testing.assert_close(loss.total(components), expected)
    torch.testing.assert_close(loss.total(components), expected)


def test_missing_weights_are_one_and_callables_are_wrapped():
    pred, target = data()
    loss = CompositeLoss({"huber": HuberLoss(delta=0.5), "smooth": F.smooth_l1_loss})
    assert loss.weights == {"huber": 1.0, "smooth": 1.0}
    expected = F.huber_loss(pred, target, delta=0.5) + F.smooth_l1_loss(pred, target)
    torch.testing.assert_close(loss(pred, target), expected)


def test_a_single_loss_total_is_the_sum_of_its_components():
    pred, target = data()
    torch.testing.assert_close(
        MSELoss().total({"a": torch.tensor(1.5), "b": torch.tensor(2.0)}), torch.tensor(3.5)
    )
    torch.testing.assert_close(
        MSELoss().total(MSELoss().components(pred, target)), F.mse_loss(pred, target)
    )


def test_dice_plus_cross_entropy_on_segmentation_logits():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 5, generator=generator, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 5), generator=generator)
    loss = CompositeLoss({"dice": DiceLoss(), "ce": CrossEntropyLoss()}, weights={"dice": 0.5})
    assert loss.input_space == "logits"
    components = loss.components(logits, target)
    torch.testing.assert_close(components["ce"], F.cross_entropy(logits, target))
    total = loss.total(components)
    torch.testing.assert_close(total, 0.5 * components["dice"] + components["ce"])
    total.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan])
def test_weights_must_be_finite_and_non_negative(bad):
    with pytest.raises(
        ValueError, match=r"composite: option 'weights\.l1' must be a finite number >= 0"
    ):
        CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weights={"l1": bad})


def test_a_weight_for_no_term_is_an_error_naming_the_terms():
    with pytest.raises(
        ValueError, match=r"\['dise'\], which are not terms; the terms are \['ce', 'dice'\]"
    ):
        CompositeLoss({"dice": DiceLoss(), "ce": CrossEntropyLoss()}, weights={"dise": 0.5})


def test_terms_expecting_different_inputs_are_refused():
    with pytest.raises(ValueError, match="expect different inputs"):
        CompositeLoss({"dice": DiceLoss(input="probs"), "ce": CrossEntropyLoss()})


def test_no_terms_is_an_error():
    with pytest.raises(ValueError, match="at least one loss"):
        CompositeLoss({})


def test_registered_as_composite():
    loss = build_loss("composite", terms={"mse": MSELoss()}, weights={"mse": 3.0})
    assert isinstance(loss, CompositeLoss)
    assert "weights={'mse': 3.0}" in repr(loss)
