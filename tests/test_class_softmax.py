"""The CPU softmax over classes by ``exp2`` keeps the accuracy of torch's float32 softmax.

References are float64 softmax and log-softmax; error bounds come from the rounding of the
shift :math:`z - m` (relative ``2^-24`` of :math:`|z - m|`) and of a few float32 operations.
"""

from __future__ import annotations

import pytest
import torch

from lossplug.functional._class_softmax import (
    EXP2_MIN_POSITIONS,
    softmax_and_normaliser,
    softmax_over_classes,
    takes_exp2_path,
)
from lossplug.functional._softmax_stats import softmax_overlap_stats, target_log_prob

ULP = 2.0**-23  # float32's spacing at 1
LARGE = (2, 5, EXP2_MIN_POSITIONS // 2)


def large_logits(offset: float, seed: int = 0, shape=LARGE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * 4 + offset


def labels_for(logits: torch.Tensor, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, logits.shape[1], (logits.shape[0], *logits.shape[2:]), generator=generator
    )


@pytest.mark.parametrize(
    ("shape", "taken"),
    [
        (LARGE, True),
        ((1, 4, EXP2_MIN_POSITIONS), True),
        ((2, 4, EXP2_MIN_POSITIONS // 4), False),  # too few positions for five passes
        ((EXP2_MIN_POSITIONS, 4, 1), False),  # one position per sample: torch's last-dim kernel
        ((EXP2_MIN_POSITIONS, 4), False),
    ],
)
def test_exp2_path_is_taken_for_large_cpu_inputs_with_spatial_positions(shape, taken):
    logits = torch.zeros(shape)
    assert takes_exp2_path(logits) is taken
    with torch.profiler.profile() as profiler:
        softmax_over_classes(logits)
        target_log_prob(logits, torch.zeros(shape[:1] + shape[2:], dtype=torch.long))
    ran = {event.name for event in profiler.events()}
    assert ("aten::exp2_" in ran) is taken
    assert ("aten::_softmax" in ran) is not taken


@pytest.mark.parametrize("offset", [0.0, 100.0, 1000.0])
def test_probabilities_are_as_accurate_as_torchs(offset):
    logits = large_logits(offset)
    assert takes_exp2_path(logits)
    reference = logits.double().softmax(1)
    shift = (logits - logits.amax(1, keepdim=True)).abs().double()
    # relative: the shift's rounding, then a few operations; absolute only below float32's
    # normal range, where a probability may round to a subnormal or to 0
    bound = ULP * (shift + 4) * reference + torch.finfo(torch.float32).tiny
    for probs in (softmax_over_classes(logits), softmax_and_normaliser(logits)[0]):
        assert ((probs.double() - reference).abs() <= bound).all()
    assert ((logits.softmax(1).double() - reference).abs() <= bound).all()  # torch's, same bound


@pytest.mark.parametrize("shape", [LARGE, (64, 5, 3), (64, 5, 1)])
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_normaliser_gives_log_probabilities_to_float32_rounding(shape, offset):
    """(z - m) - log sum rounds with |log p|, where z - lse would round with |z|: at logits near
    1000, rounding the log-sum-exp alone costs up to 3e-5, some 250 ulps of a log-probability
    near -1."""
    logits = large_logits(offset, shape=shape)
    _, (peak, log_sum) = softmax_and_normaliser(logits)
    log_probs = (logits - peak - log_sum).double()
    reference = logits.double().log_softmax(1)
    assert ((log_probs - reference).abs() <= 4 * ULP * reference.abs().clamp(min=1)).all()


@pytest.mark.parametrize("shape", [LARGE, (64, 5)])
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_target_log_prob_and_its_gradient_at_large_logits(shape, offset):
    logits = large_logits(offset, shape=shape).requires_grad_()
    labels = labels_for(logits)
    index = labels.unsqueeze(1)
    result = target_log_prob(logits, labels)
    weights = torch.randn(labels.shape, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad((result * weights).sum(), logits)
    reference_logits = logits.detach().double().requires_grad_()
    reference = reference_logits.log_softmax(1).gather(1, index).squeeze(1)
    (reference_grad,) = torch.autograd.grad((reference * weights).sum(), reference_logits)
    assert ((result.double() - reference).abs() <= 4 * ULP * reference.abs().clamp(min=1)).all()
    torch.testing.assert_close(grad.double(), reference_grad, rtol=0, atol=8 * ULP)


def test_overlap_statistics_log_prob_at_large_logits():
    logits = large_logits(1000.0)
    labels = labels_for(logits)
    stats = softmax_overlap_stats(logits, labels, None, with_log_prob=True)
    reference = logits.double().log_softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1)
    assert (
        (stats.log_prob.double() - reference).abs() <= 4 * ULP * reference.abs().clamp(min=1)
    ).all()


def test_overlap_statistics_gradient_in_float32_on_the_exp2_path():
    """The fused Dice statistics' gradient (written into the saved softmax) against float64
    autograd through softmax and a one-hot target."""
    logits = large_logits(0.0).requires_grad_()
    labels = labels_for(logits)
    weights = [torch.randn(2, 5, generator=torch.Generator().manual_seed(i)) for i in (3, 4)]
    stats = softmax_overlap_stats(logits, labels, None, with_log_prob=False)
    weighted = (stats.intersection * weights[0]).sum() + (stats.prob_sum * weights[1]).sum()
    (grad,) = torch.autograd.grad(weighted, logits)
    reference_logits = logits.detach().double().requires_grad_()
    probs = reference_logits.softmax(1)
    one_hot = torch.nn.functional.one_hot(labels, 5).movedim(-1, 1)
    reference_weighted = ((probs * one_hot).sum(-1) * weights[0]).sum()
    reference_weighted = reference_weighted + (probs.sum(-1) * weights[1]).sum()
    (reference,) = torch.autograd.grad(reference_weighted, reference_logits)
    torch.testing.assert_close(grad.double(), reference, rtol=0, atol=8 * ULP)
