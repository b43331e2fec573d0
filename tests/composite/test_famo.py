"""FAMO weighting: the update against formulas written here, its steps, state and options."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import famo_by_hand

from lossplug.composite import CompositeLoss
from lossplug.losses import L1Loss, MSELoss
from lossplug.optim import OptimizerSpec
from lossplug.weighting import FAMOWeighting


def famo_loss(**options) -> CompositeLoss:
    return CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weighting="famo", **options)


def batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches whose two terms change at different rates from one step to the next."""
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(8, 3, generator=generator)
    target = torch.randn(8, 3, generator=generator)
    return [(pred * 0.7**t, target + 0.1 * t) for t in range(steps)]


def test_three_steps_follow_the_formula_and_the_gradient_is_famos():
    loss = famo_loss(weighting_options={"lr": 0.1, "weight_decay": 0.01})
    values = []
    for step, (pred, target) in enumerate(batches(4)):
        pred = pred.clone().requires_grad_(True)
        loss.set_progress(epoch=0, step=step)
        components = loss.components(pred, target)
        total = loss.total(components)
        (grad,) = torch.autograd.grad(total, pred)
        mse, l1 = F.mse_loss(pred, target), F.l1_loss(pred, target)
        values.append([mse.item(), l1.item()])
        expected = famo_by_hand(values, lr=0.1, weight_decay=0.01)[-1]
        assert loss.learned.logits.tolist() == pytest.approx(expected[0], rel=1e-5, abs=2e-6)
        weights = loss.varying_weights()
        assert [weights["mse"].item(), weights["l1"].item()] == pytest.approx(expected[1], rel=1e-5)
        # the update direction is that of sum_i c z_i log L_i with c held constant
        z = torch.softmax(torch.tensor(expected[0]), dim=0)
        c = 1 / (z[0] / mse.detach() + z[1] / l1.detach())
        (famo_grad,) = torch.autograd.grad(c * (z[0] * mse.log() + z[1] * l1.log()), pred)
        torch.testing.assert_close(grad, famo_grad)
    assert sum(expected[1]) == pytest.approx(1.0)
    assert abs(expected[0][0] - expected[0][1]) > 0.1  # the logits moved apart
    assert loss.learned.adam_steps.item() == 3  # the first step has nothing to compare with


def test_the_factors_start_even_and_the_first_batch_sets_them_without_a_logit_step():
    famo = FAMOWeighting(3)
    assert famo.factors().tolist() == pytest.approx([1 / 3] * 3)
    famo.observe(torch.tensor([2.0, 1.0, 0.5]))
    inverse = [1 / 2.0, 1 / 1.0, 1 / 0.5]  # z = 1/3 each: c z_i / L_i = (1/L_i) / sum 1/L_j
    assert famo.factors().tolist() == pytest.approx([v / sum(inverse) for v in inverse])
    assert famo.logits.tolist() == [0.0, 0.0, 0.0] and famo.adam_steps.item() == 0


def test_a_step_updates_once_whatever_the_number_of_micro_batches():
    """Micro-batches after a step's first change nothing; without set_progress, each is a step."""
    told, untold = FAMOWeighting(2, lr=0.1), FAMOWeighting(2, lr=0.1)
    micro_batches = [([1.0, 2.0], 0), ([3.0, 0.5], 0), ([0.8, 1.9], 1), ([7.0, 7.0], 1)]
    for values, step in micro_batches:
        told.set_progress(epoch=0, step=step)
        state = {name: buffer.clone() for name, buffer in told.state_dict().items()}
        told.observe(torch.tensor(values))
        untold.observe(torch.tensor(values))
        if values in ([3.0, 0.5], [7.0, 7.0]):  # a later micro-batch of its step
            for name, buffer in told.state_dict().items():
                assert torch.equal(buffer, state[name]), name
    expected = famo_by_hand([[1.0, 2.0], [0.8, 1.9]], lr=0.1, weight_decay=0.01)[-1]
    assert told.logits.tolist() == pytest.approx(expected[0], rel=1e-5)
    assert told.factors().tolist() == pytest.approx(expected[1], rel=1e-5)
    assert told.adam_steps.item() == 1
    four_steps = famo_by_hand([v for v, _ in micro_batches], lr=0.1, weight_decay=0.01)[-1]
    assert untold.logits.tolist() == pytest.approx(four_steps[0], rel=1e-5)
    assert untold.adam_steps.item() == 3


def test_validation_and_epoch_totals_use_the_factors_and_change_nothing():
    loss = famo_loss()
    pred, target = batches(1)[0]
    loss.total(loss.components(pred.requires_grad_(True), target))  # a training batch
    state = {name: buffer.clone() for name, buffer in loss.state_dict().items()}
    lam = loss.learned.factors().tolist()
    with torch.no_grad():  # validation
        total = loss(pred, target)
    torch.testing.assert_close(
        total, lam[0] * F.mse_loss(pred, target) + lam[1] * F.l1_loss(pred, target)
    )
    loss.total({"mse": torch.tensor(0.5), "l1": torch.tensor(2.0)})  # epoch means: no graph
    loss.end_epoch({"mse": torch.tensor(0.5), "l1": torch.tensor(2.0)})
    for name, buffer in loss.state_dict().items():
        assert torch.equal(buffer, state[name]), name


def test_configured_weights_multiply_the_factors():
    loss = famo_loss(weights={"l1": 0.5})
    pred, target = batches(1)[0]
    pred.requires_grad_(True)
    mse, l1 = F.mse_loss(pred, target).item(), F.l1_loss(pred, target).item()
    total = loss(pred, target)
    lam = [(1 / mse) / (1 / mse + 1 / l1), (1 / l1) / (1 / mse + 1 / l1)]
    assert total.item() == pytest.approx(lam[0] * mse + 0.5 * lam[1] * l1, rel=1e-6)
    weights = loss.varying_weights()
    assert [weights["mse"].item(), weights["l1"].item()] == pytest.approx(
        [lam[0], 0.5 * lam[1]], rel=1e-6
    )


def test_a_term_at_or_below_zero_in_the_first_batch_raises():
    famo = FAMOWeighting(3)
    with pytest.raises(ValueError) as info:
        famo.observe(torch.tensor([0.5, -0.25, 0.0]))
    message = str(info.value)
    assert message.startswith("famo: every term must be > 0 (FAMO weighs log L), got [0.5, -0.25")
    assert "(term 1, 2 <= 0) at the first training batch" in message
    assert FAMOWeighting(2).observe(torch.tensor([math.nan, 1.0])) is None  # NaN: not FAMO's


@pytest.mark.parametrize("bad", [[0.0, 1.0], [-1.0, 1.0], [math.nan, 1.0], [math.inf, 1.0]])
def test_a_later_batch_with_a_term_not_above_zero_or_not_finite_changes_nothing(bad):
    famo = FAMOWeighting(2, lr=0.1)
    for step, values in enumerate(([1.0, 2.0], [0.8, 1.9])):
        famo.set_progress(0, step)
        famo.observe(torch.tensor(values))
    state = {name: buffer.clone() for name, buffer in famo.state_dict().items()}
    famo.set_progress(0, 2)
    famo.observe(torch.tensor(bad))  # no host read, no error: the step leaves FAMO alone
    for name, buffer in famo.state_dict().items():
        assert torch.equal(buffer, state[name]), name
    famo.set_progress(0, 3)
    famo.observe(torch.tensor([0.5, 1.5]))  # compared with the last step that counted
    expected = famo_by_hand([[1.0, 2.0], [0.8, 1.9], [0.5, 1.5]], lr=0.1, weight_decay=0.01)
    assert famo.logits.tolist() == pytest.approx(expected[-1][0], rel=1e-5)
    assert famo.factors().tolist() == pytest.approx(expected[-1][1], rel=1e-5)


def test_the_state_is_buffers_no_optimizer_trains_and_casts_keep_in_float32():
    net = torch.nn.Module()
    net.head = torch.nn.Linear(3, 2)
    net.criterion = famo_loss()
    assert list(net.criterion.parameters()) == []
    optimizer = OptimizerSpec.parse({"_target_": "torch.optim.SGD", "lr": 0.1}).build(net)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in net.head.parameters()}
    keys = {k for k in net.state_dict() if k.startswith("criterion.learned.")}
    state = ("logits", "exp_avg", "exp_avg_sq", "adam_steps", "log_losses", "lambdas")
    assert keys == {f"criterion.learned.{name}" for name in state}
    net.to(torch.bfloat16)
    assert net.head.weight.dtype == torch.bfloat16
    assert net.criterion.learned.logits.dtype == torch.float32
    assert net.criterion.learned.adam_steps.dtype == torch.long


def test_a_loaded_state_continues_identically():
    trained, restored = famo_loss(), famo_loss()
    data = batches(5)
    for step, (pred, target) in enumerate(data[:3]):
        trained.set_progress(0, step)
        trained(pred.requires_grad_(True), target)
    restored.load_state_dict(trained.state_dict())
    for step, (pred, target) in enumerate(data[3:], start=3):
        for loss in (trained, restored):
            loss.set_progress(0, step)
            loss(pred.clone().requires_grad_(True), target)
        for name, buffer in trained.state_dict().items():
            assert torch.equal(restored.state_dict()[name], buffer), name


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"weighting_options": {"lr": -0.1}}, ValueError, "famo: option 'lr' must be a finite "),
        ({"weighting_options": {"lr": 0}}, ValueError, "famo: option 'lr' must be a finite number"),
        (
            {"weighting_options": {"weight_decay": -1.0}},
            ValueError,
            "famo: option 'weight_decay' must be a finite number >= 0.0, got -1.0",
        ),
        ({"weighting_options": {"lr": math.nan}}, ValueError, "option 'lr' must be a finite"),
        ({"weighting_options": {"lr": "fast"}}, TypeError, "famo: option 'lr' must be a number"),
        (
            {"temperature": 2.0},
            ValueError,
            "composite: option 'temperature' applies to weighting='dwa' only, got weighting='famo'",
        ),
        (
            {"weighting_options": {"beta": 0.1}},
            ValueError,
            "composite: option 'weighting_options' names ['beta'], which weighting='famo' does "
            "not take; its options: ['lr', 'weight_decay']",
        ),
    ],
)
def test_bad_famo_options(options, error, message):
    with pytest.raises(error) as info:
        famo_loss(**options)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"weighting_options": {"lr": 0.1}},
            "option 'weighting_options' names ['lr'], which weighting='fixed' does not take; "
            "its options: none",
        ),
        (
            {"weighting": "uncertainty", "weighting_options": {"lr": 0.1}},
            "which weighting='uncertainty' does not take; its options: none",
        ),
        (
            {"weighting": "dwa", "temperature": 1.0, "weighting_options": {"temperature": 3.0}},
            "composite: DWA's temperature is given twice",
        ),
    ],
)
def test_weighting_options_other_weightings_do_not_take(options, message):
    with pytest.raises(ValueError) as info:
        CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, **options)
    assert message in str(info.value)


def test_dwa_takes_its_temperature_through_weighting_options_too():
    loss = CompositeLoss(
        {"mse": MSELoss(), "l1": L1Loss()}, weighting="dwa", weighting_options={"temperature": 3}
    )
    assert loss.learned.temperature == 3.0
