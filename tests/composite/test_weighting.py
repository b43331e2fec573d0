"""Weight schedules, uncertainty weighting and DWA: values from the formulas, and bad options."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import dwa_by_hand

from lossplug.composite import CompositeLoss
from lossplug.losses import L1Loss, MSELoss
from lossplug.weighting import (
    Constant,
    Cosine,
    DynamicWeightAverage,
    Linear,
    Step,
    UncertaintyWeighting,
)
from lossplug.weighting.schedules import parse_schedule


def data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)


# -- schedules ------------------------------------------------------------------------------


def test_linear_ramps_between_begin_and_end_and_holds_outside():
    schedule = parse_schedule(
        "composite",
        "weights.dice",
        {"schedule": "linear", "initial": 0.2, "final": 1.0, "begin": 2, "end": 6},
    )
    assert isinstance(schedule, Linear) and schedule.unit == "epoch"
    for epoch in range(10):
        expected = 0.2 + 0.8 * min(max((epoch - 2) / 4, 0.0), 1.0)
        assert schedule(epoch, step=1000 + epoch) == pytest.approx(expected, abs=1e-12)
    assert schedule(0, 0) == 0.2 and schedule(4, 0) == pytest.approx(0.6)


def test_cosine_anneals_by_half_a_cosine_per_step():
    schedule = parse_schedule(
        "composite",
        "weights.aux",
        {"schedule": "cosine", "initial": 1.0, "final": 0.1, "end": 10, "unit": "step"},
    )
    assert isinstance(schedule, Cosine)
    for step in range(0, 14):
        t = min(step / 10, 1.0)
        expected = 0.1 + (1.0 - 0.1) * (1 + math.cos(math.pi * t)) / 2
        assert schedule(epoch=7, step=step) == pytest.approx(expected, abs=1e-12)
    assert schedule(0, 5) == pytest.approx(0.55)  # half-way: the mean of the two ends


def test_step_holds_each_value_from_its_milestone():
    schedule = parse_schedule(
        "composite",
        "weights.aux",
        {"schedule": "step", "initial": 0.1, "milestones": [2, 5], "values": [0.5, 1.0]},
    )
    assert isinstance(schedule, Step)
    expected = [0.1, 0.1, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert [schedule(epoch, 0) for epoch in range(8)] == expected


def test_numbers_and_constant_mappings_are_constant_weights():
    assert parse_schedule("composite", "weights.a", 0.5) == Constant(value=0.5)
    assert parse_schedule("composite", "weights.a", 2) == Constant(value=2.0)
    constant = parse_schedule("composite", "weights.a", {"schedule": "constant", "value": 3})
    assert constant.is_constant and constant(5, 500) == 3
    ramp = Linear(initial=0.0, final=1.0, end=4)
    assert parse_schedule("composite", "weights.a", ramp) is ramp and not ramp.is_constant


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        (-0.5, ValueError, "composite: option 'weights.dice' must be a finite number >= 0.0"),
        (math.nan, ValueError, "option 'weights.dice' must be a finite number >= 0.0, got nan"),
        ("high", TypeError, "option 'weights.dice' must be a number or a schedule mapping"),
        (
            {"schedule": "linear", "initial": 0.0, "final": 1.0, "begin": 5, "end": 2},
            ValueError,
            "option 'weights.dice': the linear schedule must end after it starts, got begin=5 "
            "and end=2 (epochs)",
        ),
        (
            {"schedule": "cosine", "initial": 0.0, "final": 1.0, "begin": 3, "end": 3},
            ValueError,
            "the cosine schedule must end after it starts",
        ),
        (
            {"schedule": "linear", "initial": 0.0, "final": 1.0, "lenght": 5},
            ValueError,
            "option 'weights.dice': unknown option 'lenght' for a linear schedule; valid "
            "options: begin, end, final, initial, schedule, unit",
        ),
        (
            {"schedule": "linear", "initial": 0.0, "final": 1.0},
            ValueError,
            "option 'weights.dice': the linear schedule needs ['end']",
        ),
        (
            {"schedule": "ramp"},
            ValueError,
            "option 'weights.dice.schedule' must be one of 'constant', 'linear', 'cosine', "
            "'step', got 'ramp'",
        ),
        (
            {"initial": 0.0},
            ValueError,
            "option 'weights.dice.schedule' must be one of",
        ),
        (
            {"schedule": "linear", "initial": -1.0, "final": 1.0, "end": 5},
            ValueError,
            "option 'weights.dice.initial' must be a finite number >= 0.0, got -1.0",
        ),
        (
            {"schedule": "linear", "initial": 0.0, "final": math.inf, "end": 5},
            ValueError,
            "option 'weights.dice.final' must be a finite number >= 0.0, got inf",
        ),
        (
            {"schedule": "linear", "initial": 0.0, "final": 1.0, "end": 5, "unit": "batch"},
            ValueError,
            "option 'weights.dice.unit' must be one of 'epoch', 'step', got 'batch'",
        ),
        (
            {"schedule": "step", "initial": 1.0, "milestones": [4, 2], "values": [0.5, 0.1]},
            ValueError,
            "the step schedule's milestones must increase, got [4, 2]",
        ),
        (
            {"schedule": "step", "initial": 1.0, "milestones": [2], "values": [0.5, 0.1]},
            ValueError,
            "the step schedule needs one value per milestone",
        ),
        (
            {"schedule": "step", "initial": 1.0, "milestones": [2], "values": [-0.5]},
            ValueError,
            "option 'weights.dice.values[0]' must be a finite number >= 0.0, got -0.5",
        ),
        (
            {"schedule": "step", "initial": 1.0, "milestones": 2, "values": [0.5]},
            TypeError,
            "option 'weights.dice.milestones' must be a list of numbers, got 2",
        ),
    ],
)
def test_bad_schedules_name_the_term_and_the_option(spec, error, message):
    with pytest.raises(error) as info:
        CompositeLoss({"dice": MSELoss(), "ce": L1Loss()}, weights={"dice": spec})
    assert message in str(info.value)
    assert str(info.value).startswith("composite: option 'weights.dice")


def test_composite_follows_its_schedules_and_logs_only_the_varying_weights():
    pred, target = data()
    loss = CompositeLoss(
        {"mse": MSELoss(), "l1": L1Loss()},
        weights={
            "mse": {"schedule": "linear", "initial": 0.0, "final": 2.0, "end": 4},
            "l1": {"schedule": "constant", "value": 0.5},
        },
    )
    mse, l1 = F.mse_loss(pred, target), F.l1_loss(pred, target)
    torch.testing.assert_close(loss(pred, target), 0.5 * l1)  # epoch 0: weight 0
    for epoch in (1, 3, 9):
        loss.set_progress(epoch, step=100 * epoch)
        weight = 2.0 * min(epoch / 4, 1.0)
        assert set(loss.varying_weights()) == {"mse"}
        assert loss.varying_weights()["mse"].item() == pytest.approx(weight)
        torch.testing.assert_close(loss(pred, target), weight * mse + 0.5 * l1)
        assert loss.state_dict()["term_weights"].tolist() == pytest.approx([weight, 0.5])


def test_loaded_state_gives_scheduled_weights_and_keeps_configured_constants():
    ramp = {"schedule": "linear", "initial": 0.0, "final": 1.0, "end": 10, "unit": "step"}
    trained = CompositeLoss({"a": MSELoss(), "b": L1Loss()}, weights={"a": ramp, "b": 0.25})
    trained.set_progress(0, step=4)
    fresh = CompositeLoss({"a": MSELoss(), "b": L1Loss()}, weights={"a": ramp, "b": 0.75})
    fresh.load_state_dict(trained.state_dict())
    pred, target = data()
    expected = 0.4 * F.mse_loss(pred, target) + 0.75 * F.l1_loss(pred, target)
    torch.testing.assert_close(fresh(pred, target), expected)  # no set_progress needed
    assert fresh.state_dict()["term_weights"].tolist() == pytest.approx([0.4, 0.75])


# -- uncertainty ----------------------------------------------------------------------------


def test_uncertainty_total_weights_and_gradients_follow_the_formula():
    pred, target = data()
    pred.requires_grad_(True)
    loss = CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weighting="uncertainty")
    assert isinstance(loss.learned, UncertaintyWeighting)
    s = torch.tensor([0.3, -1.2])
    with torch.no_grad():
        loss.learned.log_variances.copy_(s)
    mse, l1 = F.mse_loss(pred, target), F.l1_loss(pred, target)
    factors = [0.5 * math.exp(-0.3), 0.5 * math.exp(1.2)]
    expected = factors[0] * mse + factors[1] * l1 + 0.5 * (0.3 - 1.2)
    components = loss.components(pred, target)
    total = loss.total(components)
    torch.testing.assert_close(total, expected)
    weighted = loss.weighted_terms(components)
    torch.testing.assert_close(weighted["mse"], factors[0] * mse)
    torch.testing.assert_close(weighted["l1"], factors[1] * l1)
    weights = loss.varying_weights()
    assert [weights["mse"].item(), weights["l1"].item()] == pytest.approx(factors)
    grad_s, grad_pred = torch.autograd.grad(total, [loss.learned.log_variances, pred])
    values = torch.stack([mse, l1]).detach()
    torch.testing.assert_close(grad_s, 0.5 - torch.tensor(factors) * values)  # d/ds_i
    (expected_grad,) = torch.autograd.grad(expected, pred)
    torch.testing.assert_close(grad_pred, expected_grad)


def test_uncertainty_multiplies_constant_weights_and_refuses_schedules_and_zeros():
    loss = CompositeLoss(
        {"a": MSELoss(), "b": L1Loss()}, weights={"a": 4.0}, weighting="uncertainty"
    )
    assert loss.varying_weights()["a"].item() == pytest.approx(2.0)  # 4 * 1/2 at s = 0
    ramp = {"schedule": "linear", "initial": 0.0, "final": 1.0, "end": 3}
    for bad, shown in ((ramp, "Linear("), (0.0, "got 0.0")):
        with pytest.raises(ValueError, match=r"option 'weights\.a' must be a constant > 0") as info:
            CompositeLoss(
                {"a": MSELoss(), "b": L1Loss()}, weights={"a": bad}, weighting="uncertainty"
            )
        assert shown in str(info.value)


def test_log_variances_are_trainable_parameters_in_the_state_dict():
    loss = CompositeLoss({"a": MSELoss(), "b": L1Loss()}, weighting="uncertainty")
    assert [name for name, _ in loss.named_parameters()] == ["learned.log_variances"]
    assert "learned.log_variances" in loss.state_dict()


# -- DWA ------------------------------------------------------------------------------------


def test_dwa_weights_are_one_for_two_epochs_then_follow_the_loss_ratios():
    names = ("a", "b", "c")
    loss = CompositeLoss({name: MSELoss() for name in names}, weighting="dwa", temperature=1.5)
    assert isinstance(loss.learned, DynamicWeightAverage)
    epochs = [[2.0, 4.0, 1.0], [1.0, 3.0, 1.0], [0.5, 2.7, 0.9], [0.5, 2.0, 0.3]]
    expected = [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    expected += [dwa_by_hand(epochs[t - 1], epochs[t - 2], 1.5) for t in (2, 3, 4)]
    weights = [[w.item() for w in loss.varying_weights().values()]]
    for means in epochs:
        loss.end_epoch({name: torch.tensor(m) for name, m in zip(names, means, strict=True)})
        weights.append([w.item() for w in loss.varying_weights().values()])
    for got, want in zip(weights, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-6)
    assert sum(weights[-1]) == pytest.approx(3.0)
    assert weights[-1][0] > weights[-1][1] > weights[-1][2]  # the slowest to fall gains most


def test_dwa_total_multiplies_the_weights_and_its_state_is_checkpointed():
    pred, target = data()
    loss = CompositeLoss({"a": MSELoss(), "b": L1Loss()}, weights={"b": 0.5}, weighting="dwa")
    for means in ([1.0, 1.0], [0.5, 0.8]):
        loss.end_epoch({"a": torch.tensor(means[0]), "b": torch.tensor(means[1])})
    lam = dwa_by_hand([0.5, 0.8], [1.0, 1.0], 2.0)
    expected = lam[0] * F.mse_loss(pred, target) + lam[1] * 0.5 * F.l1_loss(pred, target)
    torch.testing.assert_close(loss(pred, target), expected)
    restored = CompositeLoss({"a": MSELoss(), "b": L1Loss()}, weights={"b": 0.5}, weighting="dwa")
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored(pred, target), expected)
    for model in (loss, restored):  # both continue from the same history
        model.end_epoch({"a": torch.tensor(0.4), "b": torch.tensor(0.4)})
    torch.testing.assert_close(restored.learned.lambdas, loss.learned.lambdas)
    by_hand = dwa_by_hand([0.4, 0.4], [0.5, 0.8], 2.0)
    assert restored.learned.lambdas.tolist() == pytest.approx(by_hand, rel=1e-6)


def test_dwa_survives_a_zero_epoch_mean():
    loss = CompositeLoss({"a": MSELoss(), "b": L1Loss()}, weighting="dwa")
    for means in ([0.0, 1.0], [0.0, 0.5], [0.2, 0.5]):
        loss.end_epoch({"a": torch.tensor(means[0]), "b": torch.tensor(means[1])})
        assert torch.isfinite(loss.learned.lambdas).all()
    assert loss.learned.lambdas[0] > 1.99  # 0.2 after 0: the largest ratio takes the weight


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weighting": "gradnorm"}, "option 'weighting' must be one of 'fixed', 'uncertainty', "),
        ({"temperature": 2.0}, "option 'temperature' applies to weighting='dwa' only"),
        ({"weighting": "dwa", "temperature": 0.0}, "dwa: option 'temperature' must be a finite"),
    ],
)
def test_bad_weighting_options(options, message):
    with pytest.raises(ValueError, match=message):
        CompositeLoss({"a": MSELoss(), "b": L1Loss()}, **options)
