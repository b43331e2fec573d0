"""Binary cross-entropy from logits: lossplug's two-pass function against torch's kernel.

References: the stable formula :math:`\\max(z, 0) - yz + \\log(1 + e^{-|z|})` in float64, and
torch's ``binary_cross_entropy_with_logits`` for gradients of every order and under torch.func.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as TF
from conftest import REPO

import lossplug
from lossplug import functional as LF

sys.path.insert(0, str(REPO / "scripts"))
from _benchkit import peak_memory

EXTREME_LOGITS = [-100.0, -40.0, -25.0, -18.0, -5.0, -0.5, 0.0, 0.5, 5.0, 18.0, 25.0, 40.0, 100.0]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def stable_formula(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    z, y = logits.double(), target.double()
    return z.clamp_min(0) - y * z + torch.log1p(torch.exp(-z.abs()))


def inputs(shape=(6, 5), seed=0, dtype=torch.float64):
    logits = (torch.randn(shape, generator=seeded(seed), dtype=dtype) * 4).requires_grad_()
    target = torch.rand(shape, generator=seeded(seed + 1), dtype=dtype)
    target[0] = target[0].round()  # hard labels beside soft ones
    return logits, target


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_value_is_within_torchs_rounding_error_at_any_logit(dtype):
    """Both forms cancel on one side; neither may stray past a few ulps of ``|z|``."""
    z = torch.tensor(EXTREME_LOGITS, dtype=dtype).repeat_interleave(3)
    y = torch.tensor([0.0, 1.0, 0.3], dtype=dtype).repeat(len(EXTREME_LOGITS))
    exact = stable_formula(z, y)
    bound = 4 * torch.finfo(dtype).eps * z.double().abs().clamp_min(1)
    ours = LF.bce(z, y, reduction="none").double()
    torchs = TF.binary_cross_entropy_with_logits(z, y, reduction="none").double()
    assert torch.all((torchs - exact).abs() <= bound)  # the bound is torch's own accuracy
    assert torch.all((ours - exact).abs() <= bound), (ours - exact).abs() / bound
    assert torch.all(ours >= 0)
    # where the target is 0 this form is exact to rounding, also deep in the tail (down to
    # the subnormal numbers, which hold fewer digits)
    negatives = (y == 0) & (z < 0)
    tiny = torch.finfo(dtype).tiny
    torch.testing.assert_close(ours[negatives], exact[negatives], rtol=4e-7, atol=tiny)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_values_and_gradients_are_torchs(reduction):
    logits, target = inputs()
    reference = logits.detach().clone().requires_grad_()
    ours = LF.bce(logits, target, reduction=reduction)
    torchs = TF.binary_cross_entropy_with_logits(reference, target, reduction=reduction)
    torch.testing.assert_close(ours, torchs)
    upstream = torch.randn(ours.shape, generator=seeded(3), dtype=ours.dtype)
    ours.backward(upstream)
    torchs.backward(upstream)
    torch.testing.assert_close(logits.grad, reference.grad)


def test_second_derivatives_are_torchs():
    """``create_graph=True`` records a differentiable backward (torch's kernel has one too)."""
    logits, target = inputs(seed=4)
    torch.autograd.gradgradcheck(lambda z: LF.bce(z, target), (logits,))
    direction = torch.randn(logits.shape, generator=seeded(5), dtype=logits.dtype)

    def hessian_times_direction(loss):
        (grad,) = torch.autograd.grad(loss(logits, target), logits, create_graph=True)
        (product,) = torch.autograd.grad(grad, logits, direction)
        return product

    torch.testing.assert_close(
        hessian_times_direction(LF.bce),
        hessian_times_direction(TF.binary_cross_entropy_with_logits),
    )


def test_torch_func_transforms_give_torchs_results_without_a_warning():
    """vmap (per-sample gradients), jacfwd (forward mode, in either input) and hessian."""
    logits, target = inputs(seed=6)
    logits = logits.detach()

    def per_sample(loss):
        return torch.func.vmap(torch.func.grad(lambda z, y: loss(z[None], y[None])))(logits, target)

    with warnings.catch_warnings(), lossplug.value_checks(False):
        warnings.simplefilter("error", UserWarning)  # e.g. "no batching rule": a slow fallback
        transforms = [per_sample] + [
            lambda loss, argnums=argnums: torch.func.jacfwd(loss, argnums)(logits, target)
            for argnums in (0, 1, (0, 1))
        ]
        for transform in transforms:
            torch.testing.assert_close(
                transform(LF.bce), transform(TF.binary_cross_entropy_with_logits)
            )
        row, row_target = logits[0], target[0]
        torch.testing.assert_close(
            torch.func.hessian(LF.bce)(row, row_target),
            torch.func.hessian(TF.binary_cross_entropy_with_logits)(row, row_target),
        )


def test_a_target_that_requires_a_gradient_gets_torchs():
    logits, target = inputs(seed=7)
    target.requires_grad_()
    LF.bce(logits, target).backward()
    expected = -logits.detach() / logits.numel()  # d/dy of softplus(z) - yz, mean
    torch.testing.assert_close(target.grad, expected)


def test_holds_half_the_memory_of_torchs_kernel():
    logits = torch.randn(64, 1000, generator=seeded(8)).requires_grad_()
    target = (torch.rand(64, 1000, generator=seeded(9)) > 0.5).float()

    def peak(loss):
        def step():
            loss(logits, target).backward()
            logits.grad = None

        step()
        return peak_memory(step, torch.device("cpu"))

    one_buffer = logits.numel() * 4
    assert peak(LF.bce) <= one_buffer + 1024
    assert peak(TF.binary_cross_entropy_with_logits) >= 2 * one_buffer
