"""DiceCELoss: Dice and cross-entropy from one softmax, equal to the two losses computed apart."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from conftest import softmax_passes

from lossplug.composite import CompositeLoss
from lossplug.functional.overlap import dice_ce
from lossplug.losses import CrossEntropyLoss, DiceCELoss, DiceLoss


def segmentation_batch(seed: int = 4, ignore: int | None = None):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 5, 5, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 5, 5), generator=generator)
    if ignore is not None:
        target[0, :2] = ignore
    return logits.requires_grad_(True), target


@pytest.mark.parametrize(
    ("dice_options", "ignore"),
    [
        ({}, None),
        ({"batch": True, "include_background": False, "smooth_nr": 0.5}, None),
        ({"ignore_index": 255}, 255),
    ],
)
def test_dice_ce_equals_dice_and_cross_entropy_computed_apart(dice_options, ignore):
    logits, target = segmentation_batch(ignore=ignore)
    loss = DiceCELoss(dice_weight=0.3, ce_weight=2.0, **dice_options)
    values, counts = loss.measured_components(logits, target)
    ce_ignore = -100 if ignore is None else ignore
    apart = {"dice": DiceLoss(**dice_options), "ce": CrossEntropyLoss(ignore_index=ce_ignore)}
    for name, term in apart.items():  # each term's own (single) component and count
        (value,), (count,) = (part.values() for part in term.measured_components(logits, target))
        torch.testing.assert_close(values[name], value)
        assert int(counts[name]) == int(count)
    reference = F.cross_entropy(logits, target, ignore_index=ce_ignore)
    torch.testing.assert_close(values["ce"], reference)
    assert loss.component_names() == tuple(values) == ("dice", "ce")
    (grad,) = torch.autograd.grad(loss(logits, target), logits)
    by_hand = 0.3 * apart["dice"](logits, target) + 2.0 * apart["ce"](logits, target)
    (apart_grad,) = torch.autograd.grad(by_hand, logits)
    torch.testing.assert_close(grad, apart_grad)
    weighted = loss.weighted_terms(values)
    torch.testing.assert_close(weighted["dice"], 0.3 * values["dice"])
    torch.testing.assert_close(loss.total(values), 0.3 * values["dice"] + 2.0 * values["ce"])


def test_dice_ce_takes_one_softmax_where_the_two_terms_take_two():
    logits, target = segmentation_batch()
    fused, apart = DiceCELoss(), CompositeLoss({"dice": DiceLoss(), "ce": CrossEntropyLoss()})
    assert softmax_passes(lambda: fused(logits, target).backward()) == 1
    assert softmax_passes(lambda: apart(logits, target).backward()) == 2


def test_the_forward_pass_runs_the_functional_dice_ce_operations_only():
    """The loss itself launches exactly ``dice_ce``'s kernels: the counts that only logging
    needs (a pass over the target) are taken in ``measured_components`` alone."""
    logits, target = segmentation_batch(ignore=255)
    loss = DiceCELoss(ignore_index=255)

    def kernels(run):
        with torch.profiler.profile() as prof:
            run()
        return Counter(e.name for e in prof.events() if e.name.startswith("aten::"))

    functional = kernels(lambda: dice_ce(logits, target, ignore_index=255))
    assert kernels(lambda: loss(logits, target)) == functional
    measured = kernels(lambda: loss.measured_components(logits, target))
    assert (measured - functional)["aten::ne"] == 1  # the pass over the target that counts


def test_bad_options_and_soft_targets_get_clear_errors():
    with pytest.raises(ValueError, match=r"dice_ce: option 'dice_weight' must be .* got -1"):
        DiceCELoss(dice_weight=-1.0)
    with pytest.raises(ValueError, match="dice_ce: option 'smooth_dr'"):
        DiceCELoss(smooth_dr=float("nan"))
    logits, target = segmentation_batch()
    one_hot = F.one_hot(target, 4).movedim(-1, 1).double()
    with pytest.raises(TypeError, match="dice_ce: 'target' must hold class indices"):
        DiceCELoss()(logits, one_hot)
