"""Cross-entropy's kernel gives torch's values and gradients with one buffer fewer.

References are torch's ``cross_entropy`` (value and gradient, with any incoming gradient),
float64 for float32 accuracy, and peak tensor memory measured with torch's profiler.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from conftest import kernels_from_any_size

from benchmarks.benchkit import loss_step_peak_memory
from lossplug import functional as LF
from lossplug import kernels
from lossplug.kernels import THRESHOLDS
from lossplug.kernels.cross_entropy import cross_entropy_kernel

SHAPES = [(6, 5), (4, 3, 7), (2, 3, 4, 5), (2, 3, 2, 3, 2)]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(shape, seed=0, dtype=torch.float64, ignore_index=-100):
    logits = (torch.randn(shape, generator=seeded(seed), dtype=dtype) * 3).requires_grad_()
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=seeded(seed + 1))
    target.view(-1)[::4] = ignore_index
    return logits, target


def value_and_grad(loss, logits, incoming):
    value = loss(logits)
    (grad,) = torch.autograd.grad(value, logits, incoming)
    return value.detach(), grad


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_values_are_torchs_and_gradients_match_for_any_incoming_gradient(
    shape, reduction, use_weight, ignore_index
):
    logits, target = inputs(shape, ignore_index=ignore_index)
    weight = torch.rand(shape[1], generator=seeded(2), dtype=logits.dtype) if use_weight else None
    options = {"weight": weight, "ignore_index": ignore_index, "reduction": reduction}
    incoming_shape = target.shape if reduction == "none" else ()
    incoming = torch.randn(incoming_shape, generator=seeded(3), dtype=logits.dtype)
    ours = value_and_grad(
        lambda x: cross_entropy_kernel(x, target, weight, ignore_index, reduction), logits, incoming
    )
    torchs = value_and_grad(lambda x: TF.cross_entropy(x, target, **options), logits, incoming)
    assert torch.equal(ours[0], torchs[0])  # torch's own forward kernels
    torch.testing.assert_close(ours[1], torchs[1])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_without_ignore_index_every_target_counts(shape, reduction):
    logits, target = inputs(shape)
    target = target.clamp_min(0)  # class indices only
    incoming_shape = target.shape if reduction == "none" else ()
    incoming = torch.randn(incoming_shape, generator=seeded(3), dtype=logits.dtype)
    ours = value_and_grad(
        lambda x: cross_entropy_kernel(x, target, None, None, reduction), logits, incoming
    )
    torchs = value_and_grad(
        lambda x: TF.cross_entropy(x, target, reduction=reduction), logits, incoming
    )
    assert torch.equal(ours[0], torchs[0])
    torch.testing.assert_close(ours[1], torchs[1])
    for bad in (-1, -100):  # no value is skipped: torch's kernels refuse each
        target.view(-1)[0] = bad
        with pytest.raises((IndexError, RuntimeError), match=str(bad)):
            cross_entropy_kernel(logits, target, None, None, reduction)


def test_channels_last_logits_match_torch():
    logits, target = inputs((2, 3, 4, 5))
    logits = logits.detach().to(memory_format=torch.channels_last).requires_grad_()
    incoming = torch.tensor(1.5, dtype=logits.dtype)
    ours = value_and_grad(
        lambda x: cross_entropy_kernel(x, target, None, -100, "mean"), logits, incoming
    )
    torchs = value_and_grad(lambda x: TF.cross_entropy(x, target), logits, incoming)
    assert torch.equal(ours[0], torchs[0])
    torch.testing.assert_close(ours[1], torchs[1])


def test_a_mean_with_every_target_kept_matches_torch():
    logits, target = inputs((8, 5))
    target = target.clamp_min(0)  # none ignored: the shared scale of the mean
    incoming = torch.tensor(2.5, dtype=logits.dtype)
    ours = value_and_grad(
        lambda x: cross_entropy_kernel(x, target, None, -100, "mean"), logits, incoming
    )
    torchs = value_and_grad(lambda x: TF.cross_entropy(x, target), logits, incoming)
    torch.testing.assert_close(ours[1], torchs[1])


def test_float32_gradient_is_as_accurate_as_torchs():
    """Against float64: the exp2 of the log-probabilities loses no more than torch's."""
    logits64, target = inputs((64, 50), seed=4)
    logits64 = (logits64.detach() * 10).requires_grad_()  # log-probabilities down to ~-300
    logits32 = logits64.detach().float().requires_grad_()
    (exact,) = torch.autograd.grad(TF.cross_entropy(logits64, target), logits64)
    (ours,) = torch.autograd.grad(
        cross_entropy_kernel(logits32, target, None, -100, "mean"), logits32
    )
    (torchs,) = torch.autograd.grad(TF.cross_entropy(logits32, target), logits32)
    torch_error = (torchs.double() - exact).abs().max()
    assert (ours.double() - exact).abs().max() <= 2 * torch_error + 1e-9


def test_a_retained_graph_gives_the_same_gradient_twice():
    """With ``retain_graph=True`` a second backward pass reads the same saved tensors."""
    logits, target = inputs((6, 5))
    value = cross_entropy_kernel(logits, target, None, -100, "mean")
    (first,) = torch.autograd.grad(value, logits, retain_graph=True)
    (second,) = torch.autograd.grad(value, logits)
    (expected,) = torch.autograd.grad(TF.cross_entropy(logits, target), logits)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_second_derivatives_are_torchs(reduction):
    """``create_graph=True`` differentiates the gradient: Hessian-vector products as torch's."""
    logits, target = inputs((5, 4, 3))
    direction = torch.randn(logits.shape, generator=seeded(7), dtype=logits.dtype)

    def hessian_vector(loss):
        value = loss(logits)
        incoming = torch.ones_like(value)
        (grad,) = torch.autograd.grad(value, logits, incoming, create_graph=True)
        (product,) = torch.autograd.grad((grad * direction).sum(), logits)
        return product

    ours = hessian_vector(lambda x: cross_entropy_kernel(x, target, None, -100, reduction))
    torchs = hessian_vector(lambda x: TF.cross_entropy(x, target, reduction=reduction))
    torch.testing.assert_close(ours, torchs)


def _mean_in_place(x, y):
    return cross_entropy_kernel(x, y, None, -100, "mean")


def test_backward_allocates_no_logits_sized_buffer():
    """torch's backward allocates the NLL gradient and the log-softmax gradient; this one
    writes the gradient into the forward's log-probabilities."""
    logits = torch.randn(64, 1000, generator=seeded(8)).requires_grad_()
    target = torch.randint(0, 1000, (64,), generator=seeded(9))
    full_size = logits.numel() * logits.element_size()
    cpu = torch.device("cpu")
    ours = loss_step_peak_memory(_mean_in_place, (logits, target), cpu)
    torchs = loss_step_peak_memory(TF.cross_entropy, (logits, target), cpu)
    assert ours <= full_size + 64 * 1024  # the log-probabilities, plus per-sample temporaries
    assert torchs - ours >= 2 * full_size - 64 * 1024


def test_logits_the_caller_drops_are_kept_and_the_peak_is_still_lower():
    """The function keeps the logits for second derivatives: about 2/3 of torch's peak then."""
    features = torch.randn(64, 32, generator=seeded(13))
    weight = torch.randn(32, 1000, generator=seeded(14)).requires_grad_()
    target = torch.randint(0, 1000, (64,), generator=seeded(15))
    full_size = 64 * 1000 * 4

    def through_a_layer(loss):
        def layer_then_loss(w, y):
            return loss(features @ w, y)  # the logits are dropped after the loss

        return loss_step_peak_memory(layer_then_loss, (weight, target), torch.device("cpu"))

    ours, torchs = through_a_layer(_mean_in_place), through_a_layer(TF.cross_entropy)
    assert 2 * full_size <= ours <= 2 * full_size + 64 * 1024 + weight.numel() * 4
    assert torchs - ours >= full_size - 64 * 1024


def _takes_in_place_path(logits, target, **options):
    loss = LF.cross_entropy(logits, target, reduction="sum", **options)
    return "_CrossEntropyBackward" in type(loss.grad_fn).__name__


def test_cross_entropy_takes_the_kernel_from_its_threshold_and_where_it_applies():
    classes = 1000
    rows = THRESHOLDS["cross_entropy"].minimum // classes + 1
    logits = torch.randn(rows, classes).requires_grad_()
    target = torch.randint(0, classes, (rows,), generator=seeded(10))
    assert _takes_in_place_path(logits, target)
    assert _takes_in_place_path(logits, target, weight=torch.rand(classes))
    assert not _takes_in_place_path(logits[: rows - 2], target[: rows - 2])  # below
    assert not _takes_in_place_path(logits, target, label_smoothing=0.1)
    weight = torch.rand(classes, requires_grad=True)  # left to torch's kernels, which refuse it
    with pytest.raises(RuntimeError, match="not differentiable with respect to argument 'weight'"):
        LF.cross_entropy(logits, target, weight=weight)
    assert LF.cross_entropy(logits.detach(), target).grad_fn is None

    with kernels.disabled():
        assert not _takes_in_place_path(logits, target)
    soft = torch.softmax(torch.randn(rows, classes), 1)
    assert not _takes_in_place_path(logits, soft)


def test_a_non_finite_incoming_gradient_or_weight_at_ignored_positions_stays_out():
    """torch's NLL backward never reads them: their rows of the gradient are 0, not NaN."""
    logits, target = inputs((6, 5), ignore_index=-100)  # every 4th target ignored
    incoming = torch.randn(6, generator=seeded(11), dtype=logits.dtype)
    incoming[target == -100] = float("nan")  # e.g. a 0 / 0 per-sequence mean of padding only
    weight = torch.tensor([float("inf"), 1.0, 2.0, 0.5, 1.0], dtype=logits.dtype)
    target = torch.where(target == 0, 1, target)  # class 0 (weight inf) only where ignored
    for class_weight in (None, weight):
        ours = value_and_grad(
            lambda x, w=class_weight: cross_entropy_kernel(x, target, w, -100, "none"),
            logits,
            incoming,
        )
        torchs = value_and_grad(
            lambda x, w=class_weight: TF.cross_entropy(x, target, w, reduction="none"),
            logits,
            incoming,
        )
        assert torch.equal(ours[1][target == -100], torch.zeros(2, 5, dtype=logits.dtype))
        torch.testing.assert_close(ours[1], torchs[1])


def test_a_batch_of_incoming_gradients_gives_torchs_jacobian():
    """``is_grads_batched`` runs the backward pass under vmap: it must not write in place."""
    logits, target = inputs((4, 3, 5))
    ours = cross_entropy_kernel(logits, target, None, -100, "none")
    torchs = TF.cross_entropy(logits, target, reduction="none")
    basis = torch.eye(ours.numel(), dtype=logits.dtype).view(-1, *ours.shape)
    (ours_jacobian,) = torch.autograd.grad(ours, logits, basis, is_grads_batched=True)
    (torchs_jacobian,) = torch.autograd.grad(torchs, logits, basis, is_grads_batched=True)
    torch.testing.assert_close(ours_jacobian, torchs_jacobian)


def test_forward_mode_ad_takes_torchs_kernels(monkeypatch):
    kernels_from_any_size(monkeypatch, "cross_entropy")
    logits, target = inputs((6, 5))
    tangent = torch.randn(logits.shape, generator=seeded(12), dtype=logits.dtype)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(logits, tangent)
        ours = torch.autograd.forward_ad.unpack_dual(LF.cross_entropy(dual, target)).tangent
        torchs = torch.autograd.forward_ad.unpack_dual(TF.cross_entropy(dual, target)).tangent
    torch.testing.assert_close(ours, torchs)
    assert _takes_in_place_path(logits, target)  # the same call without a tangent


@pytest.mark.parametrize("case", ["all ignored", "kept weigh 0", "a NaN logit"])
def test_the_mean_over_nothing_is_0_and_a_nan_stays_nan_with_or_without_the_kernel(
    case, kernel_mode
):
    logits, target = inputs((6, 5), ignore_index=-100)
    weight = None
    if case == "all ignored":
        target = torch.full_like(target, -100)
    elif case == "kept weigh 0":
        weight = torch.zeros(5, dtype=logits.dtype)
    else:
        logits = logits.detach().clone()
        logits[1, 0] = float("nan")  # a kept position (every 4th from 0 is ignored)
        logits.requires_grad_()
    loss = LF.cross_entropy(logits, target, weight=weight)
    (grad,) = torch.autograd.grad(loss, logits)
    if case == "a NaN logit":  # torch's mean is NaN too
        assert loss.isnan() and grad[1].isnan().all()
    else:
        assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    kernel_ran = "_CrossEntropyBackward" in {type(loss.grad_fn).__name__} | {
        type(node).__name__ for node, _ in loss.grad_fn.next_functions if node is not None
    }
    assert kernel_ran is (kernel_mode == "kernels")
