"""The quantile (pinball) loss: its formula, scikit-learn's values, the quantile it is minimised
by, its components and counts, and its errors."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import mean_pinball_loss

from lossplug import build_loss
from lossplug import functional as F
from lossplug.functional.quantile import quantile_names
from lossplug.losses import QuantileLoss

LEVELS = (0.05, 0.25, 0.5, 0.9)


def _pinball(pred: torch.Tensor, target: torch.Tensor, levels) -> torch.Tensor:
    """max(tau u, (tau - 1) u), u = y - yhat, written level by level."""
    columns = []
    for k, tau in enumerate(levels):
        u = target - pred[..., k]
        columns.append(torch.maximum(tau * u, (tau - 1) * u))
    return torch.stack(columns, dim=-1)


def _sample(*items: int, levels=LEVELS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pred = torch.randn(*items, len(levels), generator=generator, dtype=torch.float64) * 2
    return pred, torch.randn(*items, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("items", [(7,), (3, 5), (2, 3, 4)])
def test_is_its_formula_for_every_reduction(items):
    pred, target = _sample(*items)
    expected = _pinball(pred, target, LEVELS)
    torch.testing.assert_close(F.quantile_loss(pred, target, LEVELS, reduction="none"), expected)
    total = F.quantile_loss(pred, target, LEVELS, reduction="sum")
    torch.testing.assert_close(total, expected.sum())
    # the mean over items and levels alike: sum / (N * Q)
    mean = expected.sum() / (target.numel() * len(LEVELS))
    torch.testing.assert_close(F.quantile_loss(pred, target, LEVELS), mean)
    torch.testing.assert_close(QuantileLoss(LEVELS)(pred, target), mean)


def test_textbook_value():
    # residuals y - yhat: item 1: 1 and 0; item 2: -2 and -2
    # 0.1 * 1 + 0 + (0.1 - 1)(-2) + (0.9 - 1)(-2) = 0.1 + 1.8 + 0.2 = 2.1, over 4 = 0.525
    pred, target = torch.tensor([[0.0, 1.0], [2.0, 2.0]]), torch.tensor([1.0, 0.0])
    assert F.quantile_loss(pred, target, [0.1, 0.9]).item() == pytest.approx(0.525)


def test_each_level_is_scikit_learns_mean_pinball_loss_and_the_loss_their_mean():
    pred, target = _sample(50)
    loss = QuantileLoss(LEVELS)
    components = loss.components(pred, target)
    assert tuple(components) == ("q5", "q25", "q50", "q90")
    per_level = [
        mean_pinball_loss(target.numpy(), pred[:, k].numpy(), alpha=tau)
        for k, tau in enumerate(LEVELS)
    ]
    for value, reference in zip(components.values(), per_level, strict=True):
        assert value.item() == pytest.approx(reference, rel=1e-12)
    mean = sum(per_level) / len(per_level)
    assert loss(pred, target).item() == pytest.approx(mean, rel=1e-12)
    assert loss.total(components).item() == pytest.approx(mean, rel=1e-12)


def test_a_target_with_a_trailing_1_is_the_same_target():
    pred, target = _sample(4, 6)
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            F.quantile_loss(pred, target.unsqueeze(-1), LEVELS, reduction=reduction),
            F.quantile_loss(pred, target, LEVELS, reduction=reduction),
        )


def test_the_gradient_is_the_indicator_minus_tau_over_n_q():
    pred, target = _sample(6, 5)
    pred.requires_grad_(True)
    F.quantile_loss(pred, target, LEVELS).backward()
    below = (target.unsqueeze(-1) < pred).double()  # u < 0
    expected = (below - torch.tensor(LEVELS, dtype=torch.float64)) / pred.numel()
    torch.testing.assert_close(pred.grad, expected)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_float64(reduction):
    pred, target = _sample(3, 4)
    pred.requires_grad_(True)
    loss = QuantileLoss(LEVELS, reduction=reduction)
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred,), eps=1e-6, atol=1e-5)


# -- the minimiser -------------------------------------------------------------------------

#: 40 distinct values with unequal gaps (at least 1 apart), in no order
SAMPLE = torch.randperm(40, generator=torch.Generator().manual_seed(7)).double() ** 1.5
#: 40 tau is a whole number for 0.025, 0.1, 0.5, 0.75 and 0.9 (a whole interval of
#: minimisers), not for 0.33 and 0.99 (one minimiser)
MINIMISED_LEVELS = (0.025, 0.1, 0.33, 0.5, 0.75, 0.9, 0.99)


def _check_minimisers(found: torch.Tensor, tolerance: float) -> None:
    """``found`` (one per level) lies between torch.quantile's bracketing order statistics,
    and is the order statistic of rank ceil(n tau) where that is the only minimiser."""
    q = torch.tensor(MINIMISED_LEVELS, dtype=torch.float64)
    lower = torch.quantile(SAMPLE, q, interpolation="lower")
    higher = torch.quantile(SAMPLE, q, interpolation="higher")
    assert ((lower - tolerance <= found) & (found <= higher + tolerance)).all(), (found, q)
    ordered, n = SAMPLE.sort().values, len(SAMPLE)
    for tau, value in zip(MINIMISED_LEVELS, found.tolist(), strict=True):
        if not (n * tau).is_integer():
            assert value == pytest.approx(ordered[math.ceil(n * tau) - 1].item(), abs=tolerance)


def test_the_best_constant_among_the_sample_is_its_empirical_quantile():
    # the loss is piecewise linear in each constant, with its kinks at the sample values, so a
    # minimiser lies among them: try each value for every level at once
    per_candidate = [
        F.quantile_components(
            candidate.expand(len(SAMPLE), len(MINIMISED_LEVELS)), SAMPLE, MINIMISED_LEVELS
        )
        for candidate in SAMPLE
    ]
    losses = torch.stack([torch.stack(list(parts.values())) for parts in per_candidate])
    _check_minimisers(SAMPLE[losses.argmin(0)], tolerance=0.0)


def test_constants_trained_with_the_loss_reach_the_empirical_quantiles():
    constants = torch.full((len(MINIMISED_LEVELS),), SAMPLE.mean().item(), dtype=torch.float64)
    constants.requires_grad_(True)
    steps = 500
    optimizer = torch.optim.Adam([constants], lr=3.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / steps) ** 2)
    for _ in range(steps):
        optimizer.zero_grad()
        pred = constants.expand(len(SAMPLE), len(MINIMISED_LEVELS))
        F.quantile_loss(pred, SAMPLE, MINIMISED_LEVELS).backward()
        optimizer.step()
        schedule.step()
    # the sample spreads over 0 .. 240, its values at least 1 apart: 0.05 is no accident
    _check_minimisers(constants.detach(), tolerance=0.05)


# -- components, counts, reductions ----------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_the_total_of_the_components_is_the_loss(reduction):
    pred, target = _sample(3, 4)
    loss = QuantileLoss(LEVELS, reduction=reduction)
    components = loss.components(pred, target)
    value = loss(pred, target)
    torch.testing.assert_close(loss.total(components), value)
    expected_shape = () if reduction != "none" else (3, 4)
    assert all(part.shape == expected_shape for part in components.values())
    assert value.shape == (() if reduction != "none" else pred.shape)


def test_each_component_is_its_level_alone():
    pred, target = _sample(9)
    components = QuantileLoss(LEVELS).components(pred, target)
    for k, (name, value) in enumerate(components.items()):
        alone = F.quantile_loss(pred[:, k : k + 1], target, [LEVELS[k]])
        torch.testing.assert_close(value, alone, msg=name)


def test_the_counts_are_the_items():
    pred, target = _sample(3, 5)
    loss = QuantileLoss(LEVELS)
    components, counts = loss.measured_components(pred, target)
    assert counts == dict.fromkeys(loss.component_names(), 15)
    assert tuple(components) == loss.component_names()


def test_an_empty_batch_gives_zero():
    pred = torch.zeros(0, 3, requires_grad=True)
    loss = QuantileLoss()
    value = loss(pred, torch.zeros(0))
    value.backward()
    assert value.item() == 0.0 and pred.grad.shape == (0, 3)
    assert all(part.item() == 0.0 for part in loss.components(pred, torch.zeros(0)).values())


def test_half_inputs_are_computed_in_float32():
    pred, target = _sample(8)
    value = F.quantile_loss(pred.half(), target.half(), LEVELS)
    assert value.dtype == torch.float32
    reference = F.quantile_loss(pred.half().float(), target.half().float(), LEVELS)
    torch.testing.assert_close(value, reference)


@pytest.mark.parametrize(
    ("levels", "names"),
    [
        ((0.1, 0.5, 0.9), ("q10", "q50", "q90")),
        ((0.025, 0.975), ("q2_5", "q97_5")),
        ((0.001, 0.3, 0.7), ("q0_1", "q30", "q70")),
        ((0.1, 0.1000000000001), ("q10", "q10_00000000001")),
    ],
)
def test_component_names_are_the_levels_in_percent(levels, names):
    assert quantile_names(levels) == names
    assert QuantileLoss(levels).component_names() == names
    assert all(name.isidentifier() for name in names)


def test_built_from_the_registry_with_its_defaults():
    loss = build_loss("quantile")
    assert isinstance(loss, QuantileLoss)
    assert loss.quantiles == (0.1, 0.5, 0.9)
    assert repr(loss) == "QuantileLoss(quantiles=(0.1, 0.5, 0.9), reduction='mean')"


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: F.quantile_loss(torch.zeros(4, 2), torch.zeros(4), [0.1, 0.5, 0.9]),
            r"quantile: 'pred' must have one column per quantile in its last dimension, 3 for "
            r"quantiles \[0.1, 0.5, 0.9\], got shape \(4, 2\)",
        ),
        (
            lambda: F.quantile_loss(torch.zeros(()), torch.zeros(()), [0.5]),
            r"quantile: 'pred' must have one column per quantile.*got shape \(\)",
        ),
        (
            lambda: F.quantile_loss(torch.zeros(4, 3), torch.zeros(5), [0.1, 0.5, 0.9]),
            r"quantile: 'target' must have shape \(4,\) \(pred's shape without its last "
            r"dimension\) or \(4, 1\), got \(5,\)",
        ),
        (
            lambda: F.quantile_loss(torch.zeros(4, 3), torch.zeros(4, 3), [0.1, 0.5, 0.9]),
            r"quantile: 'target' must have shape \(4,\).*got \(4, 3\)",
        ),
        (
            lambda: F.quantile_loss(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), [0.5]),
            r"quantile: 'target' must be a floating-point tensor of regression targets, got "
            r"torch.int64",
        ),
        (
            lambda: F.quantile_loss(torch.zeros(4, 1, dtype=torch.long), torch.zeros(4), [0.5]),
            r"quantile: 'pred' must be a floating-point tensor",
        ),
        (
            lambda: F.quantile_loss(torch.zeros(4, 1), torch.zeros(4), [0.5], reduction="avg"),
            r"quantile: option 'reduction' must be one of 'mean', 'sum', 'none', got 'avg'",
        ),
        (
            lambda: QuantileLoss([0.1, 1.0]),
            r"quantile: option 'quantiles\[1\]' must be a finite number > 0.0 and < 1.0, "
            r"got 1.0",
        ),
        (
            lambda: QuantileLoss([0.0, 0.5]),
            r"quantile: option 'quantiles\[0\]' must be a finite number > 0.0 and < 1.0",
        ),
        (
            lambda: QuantileLoss([float("nan")]),
            r"quantile: option 'quantiles\[0\]'.*got nan",
        ),
        (lambda: QuantileLoss([0.5, True]), r"quantile: option 'quantiles\[1\]' must be a number"),
        (
            lambda: QuantileLoss([0.9, 0.1]),
            r"quantile: option 'quantiles' must be strictly increasing, got \[0.9, 0.1\]",
        ),
        (
            lambda: QuantileLoss([0.5, 0.5]),
            r"quantile: option 'quantiles' must be strictly increasing, got \[0.5, 0.5\]",
        ),
        (lambda: QuantileLoss([]), r"quantile: option 'quantiles' must hold at least one level"),
        (
            lambda: QuantileLoss(0.5),
            r"quantile: option 'quantiles' must be a sequence of numbers in \(0, 1\), got 0.5",
        ),
        (
            lambda: F.quantile_loss(torch.zeros(4, 1), torch.zeros(4), "0.5"),
            r"quantile: option 'quantiles' must be a sequence of numbers.*got '0.5'",
        ),
        (
            lambda: QuantileLoss(reduction="avg"),
            r"quantile: option 'reduction' must be one of",
        ),
    ],
)
def test_bad_input_names_loss_and_option(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
