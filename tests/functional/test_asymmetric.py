"""Asymmetric loss against timm's ``AsymmetricLossMultiLabel``, written out here.

timm is not a dependency; :func:`_timm_asl` is timm's ``forward`` (timm/loss/asymmetric_loss.py,
the authors' code) line by line, with ``disable_torch_grad_focal_loss=False``. It returns the
negative *sum* over every element: lossplug's ``reduction="sum"``.
"""

import pytest
import torch

from lossplug import functional as F
from lossplug import losses

torch.manual_seed(0)


def _timm_asl(x, y, gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8):
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        pt0 = xs_pos * y
        pt1 = xs_neg * (1 - y)
        pt = pt0 + pt1
        one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
        one_sided_w = torch.pow(1 - pt, one_sided_gamma)
        loss *= one_sided_w
    return -loss.sum()


@pytest.mark.parametrize(
    ("gamma_pos", "gamma_neg", "clip"),
    [(0.0, 4.0, 0.05), (1.0, 4.0, 0.05), (0.0, 0.0, 0.0), (2.0, 1.0, 0.0), (0.5, 3.0, 0.2)],
)
def test_asymmetric_is_timms_formula_values_and_gradients(gamma_pos, gamma_neg, clip):
    logits = (torch.randn(16, 7, dtype=torch.float64) * 4).requires_grad_()
    target = torch.randint(0, 2, (16, 7)).double()
    ours = F.asymmetric(
        logits, target, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, reduction="sum"
    )
    theirs = _timm_asl(logits, target, gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(
        torch.autograd.grad(ours, logits)[0], torch.autograd.grad(theirs, logits)[0]
    )


def test_mean_is_timms_sum_over_the_number_of_elements():
    logits, target = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 2, (8, 5)).double()
    torch.testing.assert_close(
        losses.AsymmetricLoss()(logits, target), _timm_asl(logits, target, gamma_pos=0) / 40
    )


def test_the_eps_floor_is_timms_at_extreme_logits():
    logits = torch.tensor([-100.0, 100.0, -30.0])
    target = torch.tensor([1.0, 1.0, 1.0])
    ours = F.asymmetric(logits, target, gamma_pos=1.0, reduction="none")
    theirs = [_timm_asl(z, t) for z, t in zip(logits, target, strict=True)]
    torch.testing.assert_close(ours, torch.stack(theirs))


def test_components_are_the_positive_and_negative_terms():
    logits, target = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 2, (6, 4)).double()
    loss = losses.AsymmetricLoss(gamma_pos=1.0, reduction="sum")
    parts = loss.components(logits, target)
    assert list(parts) == list(loss.component_names()) == ["pos", "neg"]
    positives, negatives = target == 1, target == 0
    pos = _timm_asl(logits[positives], target[positives], gamma_pos=1.0)
    torch.testing.assert_close(parts["pos"], pos)
    torch.testing.assert_close(parts["neg"], _timm_asl(logits[negatives], target[negatives]))


def test_a_negative_below_the_margin_costs_nothing_with_finite_gradients():
    logits = torch.tensor([-5.0, -100.0, 100.0], requires_grad=True)  # p < 0.05 for the first two
    loss = F.asymmetric(logits, torch.zeros(3), gamma_neg=0.5, reduction="none")
    loss.sum().backward()
    assert loss[0].item() == loss[1].item() == 0.0
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()


def test_a_margin_below_float32s_range_keeps_the_gradient_finite():
    logits = torch.tensor([89.0, 100.0], requires_grad=True)  # sigmoid(-z) + clip rounds to 0
    loss = F.asymmetric(logits, torch.zeros(2), gamma_neg=0.0, clip=1e-56)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_ignore_index_equals_loss_on_kept_elements_and_counts_them():
    logits, target = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 2, (5, 4)).double()
    target[0, 1] = target[3, 2] = -1
    kept = target != -1
    loss = losses.AsymmetricLoss(ignore_index=-1)
    torch.testing.assert_close(
        loss(logits, target), losses.AsymmetricLoss()(logits[kept], target[kept])
    )
    components, counts = loss.measured_components(logits, target)
    assert set(counts) == set(components) == {"pos", "neg"}
    assert all(int(count) == 18 for count in counts.values())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: F.asymmetric(torch.randn(3, 2), torch.zeros(3, 2), gamma_neg=-1.0),
            r"asymmetric: option 'gamma_neg' must be a finite number >= 0.0, got -1.0",
        ),
        (
            lambda: F.asymmetric(torch.randn(3, 2), torch.zeros(3, 2), clip=1.5),
            r"asymmetric: option 'clip' must be a finite number >= 0.0 and <= 1.0, got 1.5",
        ),
        (
            lambda: losses.AsymmetricLoss(eps=0.0),
            r"asymmetric: option 'eps' must be a finite number > 0.0 and <= 1.0, got 0.0",
        ),
        (
            lambda: F.asymmetric(torch.randn(3, 2), torch.zeros(3, dtype=torch.long)),
            r"asymmetric: 'pred' and 'target' must have the same shape",
        ),
        (
            lambda: F.asymmetric(torch.randn(3), torch.tensor([0.0, 2.0, 1.0])),
            r"asymmetric: 'target' must hold multi-label targets in \[0, 1\], got a value 2.0",
        ),
        (
            lambda: F.asymmetric(torch.zeros(3, dtype=torch.long), torch.zeros(3)),
            r"asymmetric: 'pred' must be a floating-point",
        ),
    ],
)
def test_bad_input_names_loss_and_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
