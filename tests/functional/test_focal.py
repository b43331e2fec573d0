import pytest
import torch
import torch.nn.functional as TF

from lossplug import functional as F
from lossplug import losses

torch.manual_seed(0)


def _lin_binary_reference(logits, target, gamma, alpha):
    """Lin et al. (2017), eq. (5), written out with probabilities (float64, moderate logits)."""
    p = torch.sigmoid(logits)
    p_t = torch.where(target == 1, p, 1 - p)
    alpha_t = 1.0 if alpha is None else torch.where(target == 1, alpha, 1 - alpha)
    return -alpha_t * (1 - p_t) ** gamma * torch.log(p_t)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_binary_focal_is_lin_et_al(gamma, alpha):
    logits = torch.randn(40, dtype=torch.float64) * 3
    target = torch.randint(0, 2, (40,)).double()
    ours = F.focal(logits, target, gamma=gamma, alpha=alpha, reduction="none")
    torch.testing.assert_close(ours, _lin_binary_reference(logits, target, gamma, alpha))


@pytest.mark.parametrize("mode", ["binary", "multilabel"])
def test_gamma_zero_is_bce_values_and_gradients(mode):
    logits = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 2, (5, 3)).double()
    ours = F.focal(logits, target, mode=mode, gamma=0.0)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    theirs = TF.binary_cross_entropy_with_logits(logits, target)
    (grad_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_gamma_zero_multiclass_is_cross_entropy_values_and_gradients():
    logits = torch.randn(6, 4, 2, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (6, 2))
    ours = F.focal(logits, target, mode="multiclass", gamma=0.0)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    theirs = TF.cross_entropy(logits, target)
    (grad_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_multiclass_focal_with_per_class_alpha_matches_formula():
    logits = torch.randn(8, 3, dtype=torch.float64)
    target = torch.randint(0, 3, (8,))
    alpha = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    p_t = logits.softmax(1).gather(1, target[:, None]).squeeze(1)
    expected = (-alpha[target] * (1 - p_t) ** 2 * p_t.log()).mean()
    torch.testing.assert_close(F.focal(logits, target, mode="multiclass", alpha=alpha), expected)


def test_multilabel_per_class_alpha():
    logits = torch.randn(4, 3, dtype=torch.float64)
    target = torch.randint(0, 2, (4, 3)).double()
    alpha = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    expected = torch.stack(
        [_lin_binary_reference(logits[:, c], target[:, c], 2.0, alpha[c]) for c in range(3)], 1
    )
    torch.testing.assert_close(
        F.focal(logits, target, mode="multilabel", alpha=alpha, reduction="none"), expected
    )


@pytest.mark.parametrize("mode", ["binary", "multiclass"])
def test_ignore_index_equals_loss_on_kept_elements(mode):
    if mode == "binary":
        logits, target = torch.randn(10, dtype=torch.float64), torch.randint(0, 2, (10,)).double()
        target[[1, 4]] = 255
    else:
        logits, target = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 3, (10,))
        target[[1, 4]] = 255
    kept = target != 255
    full = F.focal(logits, target, mode=mode, ignore_index=255)
    torch.testing.assert_close(full, F.focal(logits[kept], target[kept], mode=mode))
    assert F.focal(logits, torch.full_like(target, 255), mode=mode, ignore_index=255).item() == 0.0


@pytest.mark.parametrize("gamma", [0.25, 0.5, 2.0])
def test_extreme_logits_give_finite_values_and_gradients(gamma):
    binary = torch.tensor([100.0, -100.0, 100.0, -100.0, 1e4], requires_grad=True)
    loss = F.focal(binary, torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]), gamma=gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(binary.grad).all()
    multi = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 0.0]], requires_grad=True)
    loss = F.focal(multi, torch.tensor([0, 0]), mode="multiclass", gamma=gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(multi.grad).all()
    assert loss.item() == pytest.approx(
        100.0, rel=1e-4
    )  # one confident mistake of margin 200, halved


def test_module_matches_functional_and_alpha_options():
    logits, target = torch.randn(6, 4), torch.randint(0, 4, (6,))
    module = losses.FocalLoss(mode="multiclass", gamma=1.5, alpha=[0.1, 0.2, 0.3, 0.4])
    torch.testing.assert_close(
        module(logits, target),
        F.focal(logits, target, mode="multiclass", gamma=1.5, alpha=[0.1, 0.2, 0.3, 0.4]),
    )
    assert "gamma=1.5" in repr(module)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: F.focal(torch.randn(3), torch.ones(3), gamma=-1.0),
            r"focal: option 'gamma' must be a finite number >= 0.0, got -1.0",
        ),
        (
            lambda: F.focal(torch.randn(3), torch.ones(3), alpha=1.5),
            r"focal: option 'alpha' must be a finite number >= 0.0 and <= 1.0, got 1.5",
        ),
        (
            lambda: F.focal(torch.randn(3), torch.ones(3), alpha=[0.2, 0.3]),
            r"focal: option 'alpha' must be a number in \[0, 1\] in binary mode",
        ),
        (
            lambda: F.focal(
                torch.randn(3, 4),
                torch.zeros(3, dtype=torch.long),
                mode="multiclass",
                alpha=[0.2, 0.3],
            ),
            r"focal: option 'alpha' must have one value per class \(4\), got 2",
        ),
        (
            lambda: F.focal(
                torch.randn(3, 4), torch.zeros(3, dtype=torch.long), mode="multiclass", alpha=0.25
            ),
            r"focal: option 'alpha' must be a per-class list in multiclass mode",
        ),
        (
            lambda: F.focal(torch.randn(3, 4), torch.zeros(3, 4), mode="multiclass"),
            r"focal: class-index 'target' must be an integer tensor",
        ),
        (
            lambda: F.focal(torch.randn(3, 4), torch.zeros(3, 4), mode="softmax"),
            r"focal: option 'mode' must be one of 'binary', .*'multilabel', got 'softmax'",
        ),
        (
            lambda: F.focal(torch.randn(3), torch.tensor([0.0, 2.0, 1.0])),
            r"focal: 'target' must hold binary labels in \[0, 1\], got a value 2.0",
        ),
        (
            lambda: losses.FocalLoss(gamma=float("inf")),
            r"focal: option 'gamma' must be a finite number >= 0.0, got inf",
        ),
        (
            lambda: losses.FocalLoss(mode="multiclass", alpha=0.25),
            r"focal: option 'alpha' must be a per-class list in multiclass mode",
        ),
    ],
)
def test_bad_input_names_loss_and_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize("loss", [F.focal, F.poly1])
@pytest.mark.parametrize("bad", [-1, -100, 4])
def test_a_class_index_out_of_range_is_refused_without_ignore_index(loss, bad, kernel_mode):
    # -1 and torch's default ignore_index -100 too: the multiclass forms skip no target
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, bad, 3, 2, 1])
    with pytest.raises(ValueError, match=rf"class index {bad} in 'target' is out of range"):
        loss(logits, target, mode="multiclass").backward()
