"""``PositionalFunction.apply``: torch's ``Function.apply`` without the per-call binding.

References: torch's own ``torch.autograd.Function.apply`` on the same function and inputs,
and torch's fused kernels. The bce and hinge functions are lossplug's two subclasses.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as TF

from lossplug.functional import _linear_in_target, _multiclass_hinge
from lossplug.functional._autograd import PositionalFunction

BCE = _linear_in_target._LinearInTargetLoss
HINGE = _multiclass_hinge._MulticlassHingeSum


def bce_arguments(logits: torch.Tensor) -> tuple[object, ...]:
    generator = torch.Generator().manual_seed(1)
    target = torch.rand(logits.shape, generator=generator, dtype=logits.dtype)
    return logits, target, _linear_in_target.BCE_FROM_LOGITS, float(logits.numel())


def logits(requires_grad: bool = True) -> torch.Tensor:
    values = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return values.requires_grad_(requires_grad)


@pytest.fixture
def binding_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of ``inspect.Signature.bind`` (the real one still runs)."""
    calls = [0]
    bind = inspect.Signature.bind

    def counted(self: inspect.Signature, *args: object, **kwargs: object) -> object:
        calls[0] += 1
        return bind(self, *args, **kwargs)

    monkeypatch.setattr(inspect.Signature, "bind", counted)
    return calls


def test_subclasses_are_the_functions_with_setup_context() -> None:
    for function in (BCE, HINGE):
        assert issubclass(function, PositionalFunction)
        assert function.setup_context is not torch.autograd.Function.setup_context


def test_apply_outside_transforms_skips_the_binding(binding_count: list[int]) -> None:
    arguments = bce_arguments(logits())
    torch.autograd.Function.apply.__func__(BCE, *arguments)
    assert binding_count[0] == 1  # the spy sees torch's binding
    BCE.apply(*arguments)
    scores = torch.randn(5, 3, requires_grad=True)
    HINGE.apply(scores, torch.tensor([0, 1, 2, 0, 1]), 1.0, False)
    assert binding_count[0] == 1


@pytest.mark.parametrize("requires_grad", [True, False])
def test_apply_gives_torchs_value_and_gradient(requires_grad: bool) -> None:
    pred = logits(requires_grad)
    arguments = bce_arguments(pred)
    ours = BCE.apply(*arguments)
    reference = TF.binary_cross_entropy_with_logits(pred, arguments[1])
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=0)
    assert (ours.grad_fn is None) is not requires_grad
    if requires_grad:
        (ours_grad,) = torch.autograd.grad(ours, pred)
        (reference_grad,) = torch.autograd.grad(reference, pred)
        torch.testing.assert_close(ours_grad, reference_grad, rtol=1e-12, atol=1e-15)


def test_apply_under_a_transform_takes_torchs_path(binding_count: list[int]) -> None:
    pred = logits(requires_grad=False)
    _, target, form, _ = bce_arguments(pred)

    def per_sample(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return BCE.apply(z, y, form, float(z.numel()))

    grads = torch.func.vmap(torch.func.grad(per_sample))(pred, target)
    expected = (torch.sigmoid(pred) - target) / pred.shape[1]
    torch.testing.assert_close(grads, expected, rtol=1e-12, atol=1e-15)
    assert binding_count[0] > 0


def test_apply_unwraps_a_tensor_that_escaped_a_finished_transform() -> None:
    escaped = []

    def keep_input(values: torch.Tensor) -> torch.Tensor:
        escaped.append(values)
        return values.sum()

    torch.func.grad(keep_input)(logits(requires_grad=False))
    (dead_wrapper,) = escaped
    assert torch._C._functorch.is_functorch_wrapped_tensor(dead_wrapper)
    ours = BCE.apply(*bce_arguments(dead_wrapper))
    reference = torch.autograd.Function.apply.__func__(BCE, *bce_arguments(dead_wrapper))
    assert ours.grad_fn is None and reference.grad_fn is None
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_apply_with_keyword_arguments_takes_torchs_binding(binding_count: list[int]) -> None:
    pred, target, form, divisor = bce_arguments(logits())
    ours = BCE.apply(pred, target, form=form, divisor=divisor)
    reference = TF.binary_cross_entropy_with_logits(pred, target)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=0)
    assert binding_count[0] == 1
