"""Properties every loss of the catalogue must have, checked over one table of cases."""

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

import lossplug

CATALOGUE = [
    "asymmetric", "bce", "charbonnier", "contrastive", "cross_entropy", "dice", "focal",
    "generalized_dice", "hinge", "huber", "infonce", "kl_div", "l1", "lovasz_hinge",
    "lovasz_softmax", "mse", "poly1", "quantile", "smooth_l1", "supcon", "triplet", "tversky",
]  # fmt: skip


def _classes(n: int, c: int, *spatial: int) -> torch.Tensor:
    """Class indices cycling through all classes, shape (n, *spatial)."""
    positions = n * int(torch.tensor(spatial).prod()) if spatial else n
    return torch.arange(positions).remainder(c).view(n, *spatial)


def _ramp(low: float, high: float, *shape: int) -> Callable[[], torch.Tensor]:
    count = int(torch.tensor(shape).prod())
    return lambda: torch.linspace(low, high, count, dtype=torch.float64).view(*shape)


@dataclass
class Case:
    options: dict
    pred: Callable[[torch.Generator], torch.Tensor]
    target: Callable[[], torch.Tensor]
    takes_logits: bool = False
    to_pred_space: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda z: z)


def _randn(*shape):
    return lambda g: torch.randn(*shape, generator=g, dtype=torch.float64)


CASES = {
    "mse": Case({}, _randn(4, 3), _ramp(-1, 1, 4, 3)),
    "l1": Case({}, _randn(4, 3), _ramp(-1, 1, 4, 3)),
    "huber": Case({"delta": 0.7}, _randn(4, 3), _ramp(-2, 2, 4, 3)),
    "smooth_l1": Case({"beta": 0.5}, _randn(4, 3), _ramp(-2, 2, 4, 3)),
    "charbonnier": Case({"eps": 0.1}, _randn(4, 3), _ramp(-2, 2, 4, 3)),
    "quantile": Case({"quantiles": [0.05, 0.5, 0.8]}, _randn(4, 2, 3), _ramp(-2, 2, 4, 2)),
    "cross_entropy": Case(
        {"label_smoothing": 0.1}, _randn(6, 5), lambda: _classes(6, 5), takes_logits=True
    ),
    "bce": Case(
        {},
        _randn(4, 3),
        lambda: (torch.arange(12).remainder(2)).double().view(4, 3),
        takes_logits=True,
    ),
    "asymmetric": Case(
        {"gamma_pos": 1.0, "gamma_neg": 3.0, "clip": 0.05},
        _randn(4, 3),
        lambda: (torch.arange(12).remainder(2)).double().view(4, 3),
        takes_logits=True,
    ),
    "kl_div": Case(
        {},
        _randn(4, 5),
        lambda: torch.softmax(_ramp(-1, 2, 4, 5)(), 1),
        takes_logits=True,
        to_pred_space=lambda z: z.log_softmax(1),
    ),
    "hinge": Case({"mode": "multiclass"}, _randn(6, 4), lambda: _classes(6, 4), takes_logits=True),
    "focal": Case(
        {"mode": "multiclass", "gamma": 2.0},
        _randn(6, 4),
        lambda: _classes(6, 4),
        takes_logits=True,
    ),
    "poly1": Case(
        {"mode": "multiclass", "epsilon": 2.0, "gamma": 0.5},
        _randn(6, 4),
        lambda: _classes(6, 4),
        takes_logits=True,
    ),
    "dice": Case(
        {"mode": "multiclass"}, _randn(2, 3, 4, 4), lambda: _classes(2, 3, 4, 4), takes_logits=True
    ),
    "tversky": Case(
        {"mode": "multiclass", "alpha": 0.3, "beta": 0.7},
        _randn(2, 3, 4, 4),
        lambda: _classes(2, 3, 4, 4),
        takes_logits=True,
    ),
    "generalized_dice": Case(
        {"mode": "multiclass", "weight_type": "simple"},
        _randn(2, 3, 4, 4),
        lambda: _classes(2, 3, 4, 4),
        takes_logits=True,
    ),
    "lovasz_softmax": Case(
        {"per_image": True, "classes": "all"},
        _randn(2, 3, 4, 4),
        lambda: _classes(2, 3, 4, 4),
        takes_logits=True,
    ),
    "lovasz_hinge": Case(
        {},
        _randn(2, 1, 4, 4),
        lambda: (torch.arange(32).remainder(3) == 0).double().view(2, 1, 4, 4),
        takes_logits=True,
    ),
    "contrastive": Case(
        {"neg_margin": 3.0}, _randn(8, 4), lambda: torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    ),
    "triplet": Case({"margin": 5.0}, _randn(8, 4), lambda: torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])),
    "infonce": Case(
        {"temperature": 0.2}, _randn(8, 4), lambda: torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    ),
    "supcon": Case(
        {"temperature": 0.2}, _randn(8, 4), lambda: torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    ),
}


def _inputs(name, dtype=torch.float64, scale=1.0, seed=0):
    case = CASES[name]
    generator = torch.Generator().manual_seed(seed)
    pred = case.to_pred_space(case.pred(generator) * scale).to(dtype)
    target = case.target()
    if target.is_floating_point():
        target = target.to(dtype)
    return pred, target


def test_registry_lists_the_whole_catalogue():
    assert set(CATALOGUE) <= set(lossplug.available_losses())
    assert set(CASES) == set(CATALOGUE)


@pytest.mark.parametrize("name", CATALOGUE)
def test_gradcheck_float64(name):
    loss = lossplug.build_loss(name, **CASES[name].options)
    pred, target = _inputs(name)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", CATALOGUE)
def test_the_total_of_the_components_is_the_loss(name):
    loss = lossplug.build_loss(name, **CASES[name].options)
    pred, target = _inputs(name)
    components = loss.components(pred, target)
    assert components and all(isinstance(key, str) for key in components)
    torch.testing.assert_close(loss.total(components), loss(pred, target))
    if type(loss).weighted_terms is lossplug.LossModule.weighted_terms:  # each weighs 1
        torch.testing.assert_close(sum(components.values()), loss(pred, target))


@pytest.mark.parametrize("name", CATALOGUE)
def test_reductions_agree(name):
    pred, target = _inputs(name)
    options = CASES[name].options
    mean = lossplug.build_loss(name, **options, reduction="mean")(pred, target)
    total = lossplug.build_loss(name, **options, reduction="sum")(pred, target)
    unreduced = lossplug.build_loss(name, **options, reduction="none")(pred, target)
    assert mean.ndim == 0 and total.ndim == 0 and unreduced.ndim >= 1
    torch.testing.assert_close(unreduced.sum(), total)
    if name not in ("contrastive", "triplet"):  # means over their own pair sets: tested per family
        torch.testing.assert_close(unreduced.mean(), mean)


@pytest.mark.parametrize("name", [n for n in CATALOGUE if CASES[n].takes_logits])
@pytest.mark.parametrize("scale", [100.0, -100.0])
def test_extreme_logits_give_finite_values_and_gradients(name, scale):
    loss = lossplug.build_loss(name, **CASES[name].options)
    generator = torch.Generator().manual_seed(3)
    logits = torch.sign(CASES[name].pred(generator)).float() * scale
    logits.requires_grad_(True)
    pred = CASES[name].to_pred_space(logits)
    value = loss(pred, _inputs(name, torch.float32)[1])
    value.backward()
    assert torch.isfinite(value), value
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", CATALOGUE)
def test_bf16_autocast_on_cpu_is_finite_and_close_to_float32(name):
    """Stated tolerance: within 3% (relative, or absolute below 1) of the float32 value."""
    loss = lossplug.build_loss(name, **CASES[name].options)
    pred32, target32 = _inputs(name, torch.float32, scale=3.0)
    reference = loss(pred32, target32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(pred32.to(torch.bfloat16), target32)
    assert torch.isfinite(low)
    assert abs(low.float().item() - reference.item()) <= 0.03 * max(1.0, abs(reference.item()))
