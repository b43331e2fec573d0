"""Value checks step aside under ``torch.func`` transforms, and only there.

``vmap`` refuses host reads of the values it batches, so per-sample gradients
(``vmap(grad(loss))``) must run with the checks on, and equal one gradient per sample computed
eagerly, where the checks do run.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import lossplug
import lossplug.functional as LF

Loss = Callable[[Tensor, Tensor], Tensor]

_ALPHA = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
_MSE_WEIGHT = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64)

#: losses whose checks read the target's (or an option's) values, with inputs of one sample
CASES: dict[str, tuple[Loss, Callable[[torch.Generator], tuple[Tensor, Tensor]]]] = {
    "dice_binary": (
        lambda z, y: LF.dice(z, y, mode="binary"),
        lambda g: (torch.randn(6, 1, 5, generator=g), torch.randint(0, 2, (6, 1, 5), generator=g)),
    ),
    "hinge_binary": (
        lambda z, y: LF.hinge(z, y, mode="binary"),
        lambda g: (torch.randn(6, 1), torch.randint(0, 2, (6, 1), generator=g).double()),
    ),
    "mse_weighted": (
        lambda z, y: LF.mse(z, y, weight=_MSE_WEIGHT),
        lambda g: (torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)),
    ),
    "focal_alpha": (
        lambda z, y: LF.focal(z, y, mode="multiclass", alpha=_ALPHA),
        lambda g: (torch.randn(6, 3, generator=g), torch.randint(0, 3, (6,), generator=g)),
    ),
    "tversky_binary": (
        lambda z, y: LF.tversky(z, y, mode="binary"),
        lambda g: (torch.randn(6, 1, 5, generator=g), torch.randint(0, 2, (6, 1, 5), generator=g)),
    ),
}


def _double(tensor: Tensor) -> Tensor:
    return tensor.double() if tensor.is_floating_point() else tensor


def _eager_grad(loss: Loss, pred: Tensor, target: Tensor) -> Tensor:
    """The gradient by plain autograd, outside any transform (where the checks run)."""
    pred = pred.detach().requires_grad_()
    (grad,) = torch.autograd.grad(loss(pred, target), pred)
    return grad


@pytest.mark.parametrize("name", CASES)
def test_per_sample_gradients_run_with_value_checks_on(name: str) -> None:
    loss, make_inputs = CASES[name]
    pred, target = map(_double, make_inputs(torch.Generator().manual_seed(3)))

    def one(z: Tensor, y: Tensor) -> Tensor:
        return loss(z[None], y[None])

    with lossplug.value_checks(True):
        batched = torch.func.vmap(torch.func.grad(one))(pred, target)
        looped = torch.stack([_eager_grad(one, z, y) for z, y in zip(pred, target, strict=True)])
    torch.testing.assert_close(batched, looped)


@pytest.mark.parametrize(
    ("name", "bad_target"),
    [("dice_binary", 2), ("hinge_binary", 0.5), ("tversky_binary", 3)],
)
def test_outside_the_transforms_the_same_checks_refuse_bad_targets(
    name: str, bad_target: float
) -> None:
    loss, make_inputs = CASES[name]
    pred, target = map(_double, make_inputs(torch.Generator().manual_seed(4)))
    target = target.clone()
    target.view(-1)[0] = bad_target
    with pytest.raises(ValueError, match=name.split("_")[0]):
        loss(pred, target)
