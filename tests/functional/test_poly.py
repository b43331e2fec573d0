"""Poly-1 loss against Leng et al. (2022)'s formula, written out with probabilities."""

import pytest
import torch
import torch.nn.functional as TF

from lossplug import functional as F
from lossplug import losses

torch.manual_seed(0)


def _softmax_reference(logits, target, epsilon, gamma):
    """Leng et al. (2022), eq. (3) and their Poly-1 focal: -(1-pt)^g log pt + eps (1-pt)^(g+1)."""
    p_t = torch.softmax(logits, 1).gather(1, target.unsqueeze(1)).squeeze(1)
    return -((1 - p_t) ** gamma) * torch.log(p_t) + epsilon * (1 - p_t) ** (gamma + 1)


def _sigmoid_reference(logits, target, epsilon, gamma, alpha):
    """The paper's ``poly1_focal_loss`` (its appendix), in float64 probabilities."""
    p = torch.sigmoid(logits)
    p_t = target * p + (1 - target) * (1 - p)
    focal = -((1 - p_t) ** gamma) * torch.log(p_t)
    if alpha is not None:
        focal = (alpha * target + (1 - alpha) * (1 - target)) * focal
    return focal + epsilon * (1 - p_t) ** (gamma + 1)


@pytest.mark.parametrize("epsilon", [-1.0, 0.5, 2.0])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_multiclass_poly1_is_the_papers_formula(epsilon, gamma):
    logits = torch.randn(12, 5, 3, dtype=torch.float64) * 3
    target = torch.randint(0, 5, (12, 3))
    ours = F.poly1(logits, target, epsilon=epsilon, gamma=gamma, reduction="none")
    reference = _softmax_reference(
        logits.movedim(1, -1).reshape(-1, 5), target.flatten(), epsilon, gamma
    )
    torch.testing.assert_close(ours, reference.view(12, 3))


@pytest.mark.parametrize("mode", ["binary", "multilabel"])
@pytest.mark.parametrize(("gamma", "alpha"), [(0.0, None), (2.0, 0.25), (1.5, None)])
def test_sigmoid_poly1_focal_is_the_papers_code(mode, gamma, alpha):
    logits = torch.randn(8, 4, dtype=torch.float64) * 3
    target = torch.randint(0, 2, (8, 4)).double()
    ours = F.poly1(
        logits, target, mode=mode, epsilon=-1.0, gamma=gamma, alpha=alpha, reduction="none"
    )
    torch.testing.assert_close(ours, _sigmoid_reference(logits, target, -1.0, gamma, alpha))


def test_epsilon_zero_is_torch_cross_entropy_values_and_gradients():
    logits = torch.randn(6, 4, 2, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (6, 2))
    ours = F.poly1(logits, target, epsilon=0.0)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    theirs = TF.cross_entropy(logits, target)
    (grad_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_epsilon_zero_with_gamma_is_focal():
    logits, target = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 4, (6,))
    torch.testing.assert_close(
        F.poly1(logits, target, epsilon=0.0, gamma=2.0, alpha=[0.1, 0.2, 0.3, 0.4]),
        F.focal(logits, target, mode="multiclass", gamma=2.0, alpha=[0.1, 0.2, 0.3, 0.4]),
    )


def test_components_are_the_base_loss_and_the_poly_term():
    logits, target = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 4, (6,))
    parts = losses.Poly1Loss(epsilon=2.0).components(logits, target)
    p_t = torch.softmax(logits, 1)[torch.arange(6), target]
    torch.testing.assert_close(parts["ce"], TF.cross_entropy(logits, target))
    torch.testing.assert_close(parts["poly"], 2.0 * (1 - p_t).mean())
    focal_parts = losses.Poly1Loss(gamma=2.0).components(logits, target)
    assert list(focal_parts) == list(losses.Poly1Loss(gamma=2.0).component_names())
    assert list(focal_parts) == ["focal", "poly"]


@pytest.mark.parametrize("mode", ["binary", "multiclass"])
def test_ignore_index_equals_loss_on_kept_elements_and_counts_them(mode):
    if mode == "binary":
        logits, target = torch.randn(10, dtype=torch.float64), torch.randint(0, 2, (10,)).double()
    else:
        logits, target = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 3, (10,))
    target[[1, 4]] = 255
    kept = target != 255
    loss = losses.Poly1Loss(mode=mode, gamma=1.0, ignore_index=255)
    torch.testing.assert_close(
        loss(logits, target), losses.Poly1Loss(mode=mode, gamma=1.0)(logits[kept], target[kept])
    )
    components, counts = loss.measured_components(logits, target)
    assert set(counts) == set(components) == {"focal", "poly"}
    assert all(int(count) == 8 for count in counts.values())


def test_extreme_logits_give_finite_values_and_gradients():
    multi = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 0.0]], requires_grad=True)
    loss = F.poly1(multi, torch.tensor([0, 0]), gamma=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(multi.grad).all()
    assert loss.item() == pytest.approx((200.0 + 1.0) / 2, rel=1e-4)


def test_auto_mode_takes_the_mode_from_the_first_batch():
    loss = losses.Poly1Loss()
    loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    assert loss.mode == "multiclass"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: F.poly1(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), epsilon=-1.5),
            r"poly1: option 'epsilon' must be a finite number >= -1.0, got -1.5",
        ),
        (
            lambda: F.poly1(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), gamma=-1.0),
            r"poly1: option 'gamma' must be a finite number >= 0.0, got -1.0",
        ),
        (
            lambda: F.poly1(torch.randn(3, 4), torch.zeros(3, 4)),
            r"poly1: class-index 'target' must be an integer tensor",
        ),
        (
            lambda: F.poly1(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), alpha=[0.2]),
            r"poly1: option 'alpha' must have one value per class \(4\), got 1",
        ),
        (
            lambda: F.poly1(torch.randn(3), torch.tensor([0.0, 2.0, 1.0]), mode="binary"),
            r"poly1: 'target' must hold binary labels in \[0, 1\], got a value 2.0",
        ),
        (
            lambda: losses.Poly1Loss(mode="multiclass", alpha=0.25),
            r"poly1: option 'alpha' must be a per-class list in multiclass mode",
        ),
        (
            lambda: losses.Poly1Loss(epsilon=float("nan")),
            r"poly1: option 'epsilon' must be a finite number >= -1.0, got nan",
        ),
    ],
)
def test_bad_input_names_loss_and_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
