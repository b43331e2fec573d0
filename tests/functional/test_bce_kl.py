"""bce from logits and kl_div: lossplug's options and checks around torch's kernels.

References: the stable formula :math:`\\max(z, 0) - yz + \\log(1 + e^{-|z|})` in float64, and
torch's ``binary_cross_entropy_with_logits`` and ``kl_div`` for gradients of every order and
under torch.func.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF

import lossplug
from lossplug import functional as LF

EXTREME_LOGITS = [-100.0, -40.0, -25.0, -18.0, -5.0, -0.5, 0.0, 0.5, 5.0, 18.0, 25.0, 40.0, 100.0]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def stable_formula(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    z, y = logits.double(), target.double()
    return z.clamp_min(0) - y * z + torch.log1p(torch.exp(-z.abs()))


def bce_inputs(shape=(6, 5), seed=0, dtype=torch.float64):
    logits = (torch.randn(shape, generator=seeded(seed), dtype=dtype) * 4).requires_grad_()
    target = torch.rand(shape, generator=seeded(seed + 1), dtype=dtype)
    target[0] = target[0].round()  # hard labels beside soft ones
    return logits, target


def kl_inputs(shape=(6, 5), seed=0, dtype=torch.float64):
    scores = torch.randn(shape, generator=seeded(seed), dtype=dtype) * 2
    target = torch.randn(shape, generator=seeded(seed + 1), dtype=dtype).softmax(1)
    return scores.log_softmax(1).requires_grad_(), target


def torch_kl(log_q, p, reduction="batchmean"):
    total = TF.kl_div(log_q, p, reduction="sum")
    return total / log_q.shape[0] if reduction == "batchmean" else total


#: (lossplug's functional, torch's reference with the same reduction, inputs, reductions)
LOSSES = {
    "bce": (LF.bce, TF.binary_cross_entropy_with_logits, bce_inputs, ("mean", "sum", "none")),
    "kl_div": (LF.kl_div, torch_kl, kl_inputs, ("batchmean", "sum")),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_value_is_within_torchs_rounding_error_at_any_logit(dtype):
    """torch's form cancels on one side; it may not stray past a few ulps of ``|z|``."""
    z = torch.tensor(EXTREME_LOGITS, dtype=dtype).repeat_interleave(3)
    y = torch.tensor([0.0, 1.0, 0.3], dtype=dtype).repeat(len(EXTREME_LOGITS))
    exact = stable_formula(z, y)
    bound = 4 * torch.finfo(dtype).eps * z.double().abs().clamp_min(1)
    ours = LF.bce(z, y, reduction="none").double()
    torchs = TF.binary_cross_entropy_with_logits(z, y, reduction="none").double()
    assert torch.all((torchs - exact).abs() <= bound)  # the bound is torch's own accuracy
    assert torch.all((ours - exact).abs() <= bound), (ours - exact).abs() / bound


@pytest.mark.parametrize(
    ("name", "reduction"),
    [(name, reduction) for name, case in LOSSES.items() for reduction in case[3]],
)
def test_values_and_gradients_are_torchs(name, reduction):
    ours_fn, torch_fn, make_inputs, _ = LOSSES[name]
    pred, target = make_inputs()
    reference = pred.detach().clone().requires_grad_()
    ours = ours_fn(pred, target, reduction=reduction)
    torchs = torch_fn(reference, target, reduction=reduction)
    torch.testing.assert_close(ours, torchs)
    upstream = torch.randn(ours.shape, generator=seeded(3), dtype=ours.dtype)
    ours.backward(upstream)
    torchs.backward(upstream)
    torch.testing.assert_close(pred.grad, reference.grad)


def test_kl_div_with_a_temperature_is_hintons():
    log_q, p = kl_inputs(seed=10)
    reference = log_q.detach().clone().requires_grad_()
    ours = LF.kl_div(log_q, p, temperature=2.0)
    softened = (reference / 2).log_softmax(1), (p.log() / 2).softmax(1)
    torchs = 4 * torch_kl(*softened)
    torch.testing.assert_close(ours, torchs)
    ours.backward()
    torchs.backward()
    torch.testing.assert_close(log_q.grad, reference.grad)


@pytest.mark.parametrize("name", LOSSES)
def test_second_derivatives_are_torchs(name):
    """``create_graph=True`` records a differentiable backward (torch's kernels have one too)."""
    ours_fn, torch_fn, make_inputs, _ = LOSSES[name]
    pred, target = make_inputs(seed=4)
    torch.autograd.gradgradcheck(lambda z: ours_fn(z, target), (pred,))
    direction = torch.randn(pred.shape, generator=seeded(5), dtype=pred.dtype)

    def hessian_times_direction(loss):
        (grad,) = torch.autograd.grad(loss(pred, target), pred, create_graph=True)
        if not grad.requires_grad:  # the KL gradient -p / N does not depend on log q
            return torch.zeros_like(pred)
        (product,) = torch.autograd.grad(grad, pred, direction, allow_unused=True)
        return torch.zeros_like(pred) if product is None else product

    torch.testing.assert_close(hessian_times_direction(ours_fn), hessian_times_direction(torch_fn))


@pytest.mark.parametrize("checks", [True, False], ids=["value_checks", "no_value_checks"])
@pytest.mark.parametrize("name", LOSSES)
def test_torch_func_transforms_give_torchs_results_without_a_warning(name, checks):
    """vmap (per-sample gradients), jacfwd (forward mode, in either input) and hessian.

    With value checks on they are skipped under the transforms, whose vmap refuses the host
    read they need.
    """
    ours_fn, torch_fn, make_inputs, _ = LOSSES[name]
    pred, target = make_inputs(seed=6)
    pred = pred.detach()

    def per_sample(loss):
        return torch.func.vmap(torch.func.grad(lambda z, y: loss(z[None], y[None])))(pred, target)

    transforms = [per_sample] + [
        lambda loss, argnums=argnums: torch.func.jacfwd(loss, argnums)(pred, target)
        for argnums in (0, 1, (0, 1))
    ]
    transforms.append(lambda loss: torch.func.hessian(loss)(pred[0:1], target[0:1]))
    with warnings.catch_warnings(), lossplug.value_checks(checks):
        warnings.simplefilter("error", UserWarning)  # e.g. "no batching rule": a slow fallback
        for transform in transforms:
            torch.testing.assert_close(transform(ours_fn), transform(torch_fn))


@pytest.mark.parametrize("name", LOSSES)
def test_a_target_that_requires_a_gradient_gets_torchs(name):
    ours_fn, torch_fn, make_inputs, _ = LOSSES[name]
    pred, target = make_inputs(seed=7)
    target.requires_grad_()
    ours_fn(pred.detach(), target).backward()
    expected = target.grad.clone()
    target.grad = None
    torch_fn(pred.detach(), target).backward()
    torch.testing.assert_close(expected, target.grad)
