"""The softmax-statistics kernel keeps float32's accuracy at large and shifted logits.

References are float64 log-softmax and autograd through a float64 softmax.
"""

from __future__ import annotations

import torch

from lossplug.kernels.softmax_statistics import softmax_overlap_stats

ULP = 2.0**-23  # float32's spacing at 1
LARGE = (2, 5, 16384)


def large_logits(offset: float, seed: int = 0, shape=LARGE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * 4 + offset


def labels_for(logits: torch.Tensor, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, logits.shape[1], (logits.shape[0], *logits.shape[2:]), generator=generator
    )


def test_overlap_statistics_log_prob_at_large_logits():
    logits = large_logits(1000.0)
    labels = labels_for(logits)
    stats = softmax_overlap_stats(logits, labels, None, with_log_prob=True)
    reference = logits.double().log_softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1)
    assert (
        (stats.log_prob.double() - reference).abs() <= 4 * ULP * reference.abs().clamp(min=1)
    ).all()


def test_overlap_statistics_gradient_in_float32():
    """The Dice statistics' hand-written gradient against float64 autograd through softmax
    and a one-hot target."""
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
