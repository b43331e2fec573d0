import pytest
import torch
import torch.nn.functional as TF

from lossplug import functional as F
from lossplug import losses

PRED = torch.tensor([2.5, 0.0, 2.1, 7.8])
TARGET = torch.tensor([3.0, -0.5, 2.0, 7.0])


def test_textbook_mse_is_0_2875():
    # squared errors 0.25 + 0.25 + 0.01 + 0.64 = 1.15; 1.15 / 4 = 0.2875 (tutorials print 0.2275)
    assert F.mse(PRED, TARGET).item() == pytest.approx(0.2875, abs=1e-7)
    assert losses.MSELoss()(PRED, TARGET).item() == pytest.approx(0.2875, abs=1e-7)


def test_l1_textbook_value():
    assert F.l1(PRED, TARGET).item() == pytest.approx((0.5 + 0.5 + 0.1 + 0.8) / 4, abs=1e-7)


def _huber_reference(residual, delta):
    r = residual.abs()
    return torch.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))


def _smooth_l1_reference(residual, beta):
    r = residual.abs()
    return torch.where(r < beta, 0.5 * r**2 / beta, r - 0.5 * beta)


@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_huber_and_smooth_l1_match_their_formulas_and_differ_by_delta(delta):
    torch.manual_seed(0)
    pred, target = torch.randn(50, dtype=torch.float64) * 3, torch.randn(50, dtype=torch.float64)
    residual = pred - target
    huber = F.huber(pred, target, delta=delta, reduction="none")
    smooth = F.smooth_l1(pred, target, beta=delta, reduction="none")
    torch.testing.assert_close(huber, _huber_reference(residual, delta))
    torch.testing.assert_close(smooth, _smooth_l1_reference(residual, delta))
    torch.testing.assert_close(huber, delta * smooth)
    torch.testing.assert_close(
        F.huber(pred, target, delta=delta), TF.huber_loss(pred, target, delta=delta)
    )
    torch.testing.assert_close(
        F.smooth_l1(pred, target, beta=delta), TF.smooth_l1_loss(pred, target, beta=delta)
    )


def test_smooth_l1_beta_zero_is_l1():
    torch.manual_seed(1)
    pred, target = torch.randn(20), torch.randn(20)
    torch.testing.assert_close(F.smooth_l1(pred, target, beta=0.0), F.l1(pred, target))


@pytest.mark.parametrize("eps", [1e-3, 0.5, 2.0])
@pytest.mark.parametrize("subtract_eps", [False, True])
def test_charbonnier_is_its_formula(eps, subtract_eps):
    pred, target = torch.randn(50, dtype=torch.float64) * 3, torch.randn(50, dtype=torch.float64)
    expected = torch.sqrt((pred - target) ** 2 + eps**2) - (eps if subtract_eps else 0.0)
    ours = F.charbonnier(pred, target, eps=eps, subtract_eps=subtract_eps, reduction="none")
    torch.testing.assert_close(ours, expected)
    module = losses.CharbonnierLoss(eps=eps, subtract_eps=subtract_eps)
    torch.testing.assert_close(module(pred, target), expected.mean())


def test_charbonnier_is_finite_and_exact_at_extreme_and_tiny_residuals():
    pred = torch.tensor([3e20, 1e-6, 0.0], requires_grad=True)
    loss = F.charbonnier(pred, torch.zeros(3), eps=1e-3, subtract_eps=True, reduction="none")
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(pred.grad).all()
    assert loss[0].item() == pytest.approx(3e20, rel=1e-6)
    assert loss[1].item() == pytest.approx(0.5e-12 / 1e-3, rel=1e-5)  # r^2 / 2 eps, no cancellation
    assert loss[2].item() == 0.0


@pytest.mark.parametrize("loss", [F.mse, F.l1, F.huber, F.smooth_l1, F.charbonnier])
def test_mask_averages_over_kept_elements_only(loss):
    torch.manual_seed(2)
    pred, target = torch.randn(4, 6), torch.randn(4, 6)
    mask = torch.rand(4, 6) > 0.5
    expected = loss(pred[mask], target[mask])
    torch.testing.assert_close(loss(pred, target, weight=mask.float()), expected)
    assert loss(pred, target, weight=torch.zeros(4, 6)).item() == 0.0
    assert loss(pred, target, weight=mask.float(), reduction="sum").item() == pytest.approx(
        loss(pred[mask], target[mask], reduction="sum").item(), rel=1e-6
    )


@pytest.mark.parametrize("loss", [F.mse, F.l1, F.huber, F.smooth_l1, F.charbonnier])
@pytest.mark.parametrize("weighted", [False, True])
def test_an_empty_batch_gives_zero_not_nan(loss, weighted):
    pred, target = torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 3)
    weight = torch.ones(0, 3) if weighted else None
    assert torch.isnan(TF.mse_loss(pred, target))  # torch's mean over no element
    value = loss(pred, target, weight=weight)
    value.backward()
    assert value.item() == 0.0
    assert pred.grad.shape == (0, 3)
    assert loss(pred, target, weight=weight, reduction="sum").item() == 0.0
    assert loss(pred, target, weight=weight, reduction="none").shape == (0, 3)


def test_weights_give_weighted_mean_and_broadcast():
    pred, target = torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.zeros(2, 2)
    row_weight = torch.tensor([[1.0], [3.0]])
    expected = (1 * (1 + 4) + 3 * (9 + 25)) / (2 * 1 + 2 * 3)
    assert F.mse(pred, target, weight=row_weight).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: F.mse(torch.zeros(3), torch.zeros(4)),
            r"mse: 'pred' and 'target' must have the same shape.*\(3,\).*\(4,\)",
        ),
        (
            lambda: F.l1(torch.zeros(3), torch.zeros(3, dtype=torch.long)),
            r"l1: 'target' must be a floating-point.*int64",
        ),
        (
            lambda: F.huber(torch.zeros(3), torch.zeros(3), delta=-1.0),
            r"huber: option 'delta' must be a finite number > 0.0, got -1.0",
        ),
        (
            lambda: F.huber(torch.zeros(3), torch.zeros(3), delta=float("nan")),
            r"huber: option 'delta'.*got nan",
        ),
        (
            lambda: F.smooth_l1(torch.zeros(3), torch.zeros(3), beta=-0.1),
            r"smooth_l1: option 'beta' must be a finite number >= 0.0",
        ),
        (
            lambda: F.charbonnier(torch.zeros(3), torch.zeros(3), eps=0.0),
            r"charbonnier: option 'eps' must be a finite number > 0.0, got 0.0",
        ),
        (
            lambda: losses.CharbonnierLoss(subtract_eps=1),
            r"charbonnier: option 'subtract_eps' must be a bool, got 1",
        ),
        (
            lambda: F.charbonnier(torch.zeros(3), torch.zeros(4)),
            r"charbonnier: 'pred' and 'target' must have the same shape",
        ),
        (
            lambda: F.mse(torch.zeros(3), torch.zeros(3), reduction="avg"),
            r"mse: option 'reduction' must be one of 'mean', 'sum', 'none', got 'avg'",
        ),
        (
            lambda: F.mse(torch.zeros(3), torch.zeros(3), weight=torch.ones(4)),
            r"mse: 'weight' must broadcast to pred's shape \(3,\)",
        ),
        (
            lambda: F.mse(torch.zeros(3), torch.zeros(3), weight=-torch.ones(3)),
            r"mse: 'weight' must be >= 0",
        ),
        (
            lambda: losses.HuberLoss(delta=0.0),
            r"huber: option 'delta' must be a finite number > 0.0, got 0.0",
        ),
    ],
)
def test_bad_input_names_loss_and_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
