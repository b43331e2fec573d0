import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lossplug
from lossplug import functional as F
from lossplug import losses

torch.manual_seed(0)


def _ce_reference(logits, target, weight, ignore_index, eps):
    """The formula: smoothed, weighted CE; mean = sum over kept / sum of target weights."""
    n, c = logits.shape
    log_p = logits.log_softmax(1)
    weight = torch.ones(c, dtype=logits.dtype) if weight is None else weight
    total, denominator = 0.0, 0.0
    for i in range(n):
        y = int(target[i])
        if y == ignore_index:
            continue
        smooth = sum(weight[k] * -log_p[i, k] for k in range(c)) / c
        total += (1 - eps) * weight[y] * -log_p[i, y] + eps * smooth
        denominator += weight[y]
    return total / denominator


@pytest.mark.usefixtures("kernel_mode")
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("use_weight", [False, True])
def test_cross_entropy_matches_formula_and_torch(eps, use_weight):
    logits = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 4, -100, 2, -100, 1])
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64) if use_weight else None
    ours = F.cross_entropy(logits, target, weight=weight, label_smoothing=eps)
    torch.testing.assert_close(ours, _ce_reference(logits, target, weight, -100, eps))
    theirs = TF.cross_entropy(logits, target, weight=weight, label_smoothing=eps)
    torch.testing.assert_close(ours, theirs)
    expected = torch.autograd.grad(_ce_reference(logits, target, weight, -100, eps), logits)
    torch.testing.assert_close(torch.autograd.grad(ours, logits), expected)


def test_label_smoothing_ignores_ignored_positions():
    logits = torch.randn(4, 3, dtype=torch.float64)
    target = torch.tensor([0, 2, 7, 7])
    full = F.cross_entropy(logits, target, ignore_index=7, label_smoothing=0.2)
    subset = F.cross_entropy(logits[:2], target[:2], label_smoothing=0.2)
    torch.testing.assert_close(full, subset)


@pytest.mark.usefixtures("kernel_mode")
def test_cross_entropy_segmentation_shapes_and_soft_targets():
    logits = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (2, 3, 3))
    torch.testing.assert_close(F.cross_entropy(logits, target), TF.cross_entropy(logits, target))
    assert F.cross_entropy(logits, target, reduction="none").shape == (2, 3, 3)
    one_hot = TF.one_hot(target, 4).permute(0, 3, 1, 2).double()
    torch.testing.assert_close(F.cross_entropy(logits, one_hot), TF.cross_entropy(logits, target))
    soft = torch.softmax(torch.randn(2, 4, 3, 3, dtype=torch.float64), 1)
    torch.testing.assert_close(
        F.cross_entropy(logits, soft), -(soft * logits.log_softmax(1)).sum(1).mean()
    )


@pytest.mark.usefixtures("kernel_mode")
def test_cross_entropy_empty_or_all_ignored_is_zero_not_nan():
    logits = torch.randn(3, 4, requires_grad=True)
    all_ignored = F.cross_entropy(logits, torch.full((3,), -100))
    assert all_ignored.item() == 0.0
    all_ignored.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 4))
    assert F.cross_entropy(torch.randn(0, 4), torch.zeros(0, dtype=torch.long)).item() == 0.0
    assert torch.isnan(TF.cross_entropy(logits, torch.full((3,), -100)))  # torch's own: NaN


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.usefixtures("kernel_mode")
def test_weighted_cross_entropy_whose_kept_targets_all_weigh_zero_is_zero_not_nan():
    logits = torch.randn(3, 4, 2, dtype=torch.float64, generator=_seeded(3), requires_grad=True)
    target = torch.tensor([[1, -100], [1, 1], [-100, 1]])
    weight = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    assert torch.isnan(TF.cross_entropy(logits, target, weight=weight))  # torch's own: 0 / 0
    for eps in (0.0, 0.2):
        value = F.cross_entropy(logits, target, weight=weight, label_smoothing=eps)
        (grad,) = torch.autograd.grad(value, logits)
        assert value.item() == 0.0
        assert torch.equal(grad, torch.zeros_like(grad))


def _some_ignored(shape, classes, ignore_index, seed):
    target = torch.randint(0, classes, shape, generator=_seeded(seed))
    target.view(-1)[::3] = ignore_index
    return target


@pytest.mark.usefixtures("kernel_mode")
@pytest.mark.parametrize("spatial", [(), (5,), (3, 2), (2, 2, 2)], ids=lambda s: f"{len(s) + 2}d")
@pytest.mark.parametrize("ignore_index", [-100, 0, 255])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("use_weight", [False, True])
def test_cross_entropy_mean_matches_torch_in_value_and_gradient(
    spatial, ignore_index, eps, use_weight
):
    gen = _seeded(len(spatial))
    logits = torch.randn(4, 3, *spatial, dtype=torch.float64, generator=gen, requires_grad=True)
    target = _some_ignored((4, *spatial), 3, ignore_index, seed=len(spatial))
    weight = torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64) if use_weight else None
    options = {"weight": weight, "ignore_index": ignore_index, "label_smoothing": eps}
    ours = F.cross_entropy(logits, target, **options)
    theirs = TF.cross_entropy(logits, target, **options)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(
        torch.autograd.grad(ours, logits)[0], torch.autograd.grad(theirs, logits)[0]
    )


@pytest.mark.usefixtures("kernel_mode")
def test_cross_entropy_mean_keeps_a_nan_of_nan_logits():
    logits = torch.tensor([[0.0, float("nan")], [1.0, 2.0]], requires_grad=True)
    assert torch.isnan(F.cross_entropy(logits, torch.tensor([0, 1])))
    assert F.cross_entropy(logits, torch.tensor([-100, -100])).item() == 0.0


@pytest.mark.usefixtures("kernel_mode")
def test_per_sample_gradients_with_vmap_match_a_loop_over_torch():
    logits = torch.randn(3, 2, 4, dtype=torch.float64, generator=_seeded(8))
    target = torch.tensor([[0, 3], [-100, -100], [2, -100]])
    grads = torch.func.vmap(torch.func.grad(F.cross_entropy))(logits, target)
    for sample in (0, 2):
        expected = torch.func.grad(TF.cross_entropy)(logits[sample], target[sample])
        torch.testing.assert_close(grads[sample], expected)
    assert torch.equal(grads[1], torch.zeros(2, 4, dtype=torch.float64))  # nothing counts: 0


@pytest.mark.usefixtures("kernel_mode")
def test_compiled_cross_entropy_mean_matches_eager_also_when_nothing_counts():
    logits = torch.randn(2, 3, 4, generator=_seeded(7))
    target = _some_ignored((2, 4), 3, 255, seed=7)
    weight = torch.tensor([0.0, 1.0, 2.0])
    compiled = torch.compile(F.cross_entropy, fullgraph=True, dynamic=False, backend="aot_eager")
    for labels in (target, torch.where(target == 255, 255, 0)):  # then every kept weight is 0
        pred = logits.clone().requires_grad_()
        value = compiled(pred, labels, weight=weight, ignore_index=255)
        (grad,) = torch.autograd.grad(value, pred)
        expected = F.cross_entropy(pred, labels, weight=weight, ignore_index=255)
        torch.testing.assert_close(value, expected)
        torch.testing.assert_close(grad, torch.autograd.grad(expected, pred)[0])
    assert value.item() == 0.0


@pytest.mark.usefixtures("kernel_mode")
@pytest.mark.parametrize(
    ("pred_shape", "target", "error", "match"),
    [
        (
            (4, 3),
            torch.tensor([0, 1, 3, -100]),
            ValueError,
            r"^cross_entropy: class index 3 in 'target' is out of range for 3 classes; "
            r"expected values in \[0, 2\] \(ignore_index=-100\)$",
        ),
        ((4, 3), torch.tensor([0, -1, 2, 1]), ValueError, r"class index -1 in 'target'"),
        ((2, 3, 2, 2), torch.full((2, 2, 2), 7), ValueError, r"class index 7 in 'target'"),
        ((4, 3), torch.tensor([True, False, True, True]), TypeError, r"must be an integer tensor"),
        ((4, 3), torch.zeros(4, dtype=torch.complex64), TypeError, r"tensor \(torch.long\), got"),
        ((4, 3), torch.zeros(4, 1, dtype=torch.long), ValueError, r"must have shape \(4,\)"),
        ((2, 3, 2, 2), torch.zeros(2, 1, 2, 2, dtype=torch.long), ValueError, r"shape \(2, 2, 2\)"),
        ((3,), torch.tensor(1), ValueError, r"'pred' must have shape \(N, C, \.\.\.\)"),
    ],
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_explains_targets_in_lossplug_words(
    pred_shape, target, error, match, reduction
):
    # on the CPU torch's kernel checks the targets, and lossplug explains what it refuses
    with pytest.raises(error, match=match):
        F.cross_entropy(torch.zeros(pred_shape, requires_grad=True), target, reduction=reduction)


@pytest.mark.usefixtures("kernel_mode")
def test_cross_entropy_explains_torch_s_refusal_with_value_checks_off_too():
    # the check runs after torch refused the batch, so turning value checks off changes nothing
    match = r"^cross_entropy: class index 3 in 'target' is out of range for 3 classes"
    with lossplug.value_checks(False), pytest.raises(ValueError, match=match):
        F.cross_entropy(torch.zeros(4, 3, requires_grad=True), torch.tensor([0, 1, 3, 1]))


@pytest.mark.usefixtures("kernel_mode")
def test_cross_entropy_casts_class_weights_and_accepts_any_integer_target():
    logits = torch.randn(5, 3, dtype=torch.float64, generator=_seeded(5), requires_grad=True)
    target = torch.tensor([0, 2, 1, 1, 2])
    loss = losses.CrossEntropyLoss(weight=[1.0, 2.0, 0.5])  # a float32 buffer
    expected = TF.cross_entropy(logits, target, weight=torch.tensor([1.0, 2.0, 0.5]).double())
    (expected_grad,) = torch.autograd.grad(expected, logits)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        value = loss(logits, target.to(dtype))
        torch.testing.assert_close(value, expected)
        torch.testing.assert_close(torch.autograd.grad(value, logits)[0], expected_grad)


def test_bce_matches_formula_and_torch_with_pos_weight():
    logits = torch.randn(6, 3, dtype=torch.float64)
    target = torch.randint(0, 2, (6, 3)).double()
    pos_weight = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    p = torch.sigmoid(logits)
    formula = -(pos_weight * target * p.log() + (1 - target) * (1 - p).log())
    torch.testing.assert_close(
        F.bce(logits, target, pos_weight=pos_weight, reduction="none"), formula
    )
    torch.testing.assert_close(
        F.bce(logits, target, pos_weight=pos_weight),
        TF.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight),
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_bce_target_check_refuses_the_nearest_values_outside_zero_one(dtype):
    """The check reads the floats' bit patterns as integers; its edges are exactly 0 and 1."""
    logits = torch.zeros(3, dtype=dtype)
    one = torch.tensor(1.0, dtype=dtype)
    outside = {
        "next float above 1": one + torch.finfo(dtype).eps,
        "below 0": -torch.tensor(torch.finfo(dtype).tiny, dtype=dtype),
        "nan": torch.tensor(float("nan"), dtype=dtype),
        "inf": torch.tensor(float("inf"), dtype=dtype),
        "-inf": torch.tensor(float("-inf"), dtype=dtype),
    }
    for value in outside.values():
        target = torch.tensor([0.0, 1.0, 0.0], dtype=dtype)
        target[1] = value
        with pytest.raises(ValueError, match=r"bce: 'target' must hold binary targets in \[0, 1\]"):
            F.bce(logits, target)
    edges = torch.tensor([0.0, -0.0, 1.0], dtype=dtype)  # -0.0 reads as a negative integer
    working = torch.float64 if dtype == torch.float64 else torch.float32
    expected = TF.binary_cross_entropy_with_logits(logits.to(working), edges.to(working))
    torch.testing.assert_close(F.bce(logits, edges), expected)


def test_bce_probs_mode_matches_torch_and_logits_mode():
    logits = torch.randn(10, dtype=torch.float64)
    target = torch.rand(10, dtype=torch.float64)
    probs = torch.sigmoid(logits)
    torch.testing.assert_close(
        F.bce(probs, target, input="probs"), TF.binary_cross_entropy(probs, target)
    )
    torch.testing.assert_close(F.bce(probs, target, input="probs"), F.bce(logits, target))
    saturated = F.bce(
        torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]), input="probs", reduction="none"
    )
    torch.testing.assert_close(saturated, torch.tensor([100.0, 100.0]))  # torch's log clamp at -100


def test_bce_weight_is_a_weighted_mean():
    logits, target = torch.randn(8, dtype=torch.float64), torch.randint(0, 2, (8,)).double()
    mask = torch.tensor([1, 1, 0, 1, 0, 0, 1, 1], dtype=torch.float64)
    torch.testing.assert_close(
        F.bce(logits, target, weight=mask), F.bce(logits[mask.bool()], target[mask.bool()])
    )


def _kl_reference(log_q, p):
    return (p * (p.log() - log_q)).nan_to_num().sum(-1)


def test_kl_mean_is_the_divergence_and_matches_batchmean():
    log_q = torch.randn(5, 4, dtype=torch.float64).log_softmax(1)
    p = torch.softmax(torch.randn(5, 4, dtype=torch.float64), 1)
    ours = F.kl_div(log_q, p)
    torch.testing.assert_close(ours, _kl_reference(log_q, p).mean())
    torch.testing.assert_close(ours, TF.kl_div(log_q, p, reduction="batchmean"))
    # torch's default "mean" divides by N*C too: not the divergence
    with pytest.warns(UserWarning, match="batchmean"):
        assert not torch.isclose(ours, TF.kl_div(log_q, p, reduction="mean"))
    torch.testing.assert_close(F.kl_div(log_q, p.log(), log_target=True), ours)
    torch.testing.assert_close(F.kl_div(log_q, p, reduction="none"), _kl_reference(log_q, p))


def test_kl_zero_target_probabilities_and_identical_distributions():
    log_q = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64).clamp_min(1e-12).log()
    p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    assert F.kl_div(log_q, p).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert F.kl_div(p.clamp_min(1e-300).log(), p).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_temperature_is_distillation_formula():
    student, teacher, t = (
        torch.randn(6, 5, dtype=torch.float64),
        torch.randn(6, 5, dtype=torch.float64),
        4.0,
    )
    expected = t**2 * _kl_reference((student / t).log_softmax(1), (teacher / t).softmax(1)).mean()
    ours = F.kl_div(student.log_softmax(1), teacher.softmax(1), temperature=t)
    torch.testing.assert_close(ours, expected)


def test_kl_spatial_mean_is_per_distribution():
    log_q = torch.randn(2, 3, 4, 4, dtype=torch.float64).log_softmax(1)
    p = torch.randn(2, 3, 4, 4, dtype=torch.float64).softmax(1)
    per_pixel = (p * (p.log() - log_q)).sum(1)
    assert F.kl_div(log_q, p, reduction="none").shape == (2, 4, 4)
    torch.testing.assert_close(F.kl_div(log_q, p), per_pixel.mean())
    torch.testing.assert_close(
        F.kl_div(log_q, p, reduction="batchmean"), TF.kl_div(log_q, p, reduction="batchmean")
    )


def test_hinge_binary_accepts_both_label_conventions():
    scores = torch.tensor([2.0, 0.3, -0.5, -3.0])
    zero_one = torch.tensor([1, 1, 0, 0])
    expected = torch.tensor([0.0, 0.7, 0.5, 0.0])
    torch.testing.assert_close(F.hinge(scores, zero_one, reduction="none"), expected)
    torch.testing.assert_close(F.hinge(scores, 2 * zero_one - 1, reduction="none"), expected)
    torch.testing.assert_close(
        F.hinge(scores, zero_one, squared=True, reduction="none"), expected**2
    )
    with pytest.raises(
        ValueError, match=r"hinge: binary 'target' must hold labels in \{0, 1\} or \{-1, 1\}"
    ):
        F.hinge(scores, torch.tensor([1, 0, -1, 1]))


@pytest.mark.parametrize("squared", [False, True])
def test_hinge_multiclass_is_weston_watkins(squared):
    scores = torch.randn(7, 4, dtype=torch.float64)
    target = torch.randint(0, 4, (7,))
    ours = F.hinge(scores, target, mode="multiclass", margin=0.7, squared=squared, reduction="none")
    expected = torch.zeros(7, dtype=torch.float64)
    for i in range(7):
        for j in range(4):
            if j != target[i]:
                term = max(0.0, 0.7 - scores[i, target[i]].item() + scores[i, j].item())
                expected[i] += term**2 if squared else term
    torch.testing.assert_close(ours, expected)
    torch_mean = TF.multi_margin_loss(scores, target, p=1, margin=0.7) if not squared else None
    if torch_mean is not None:  # torch divides the sum over classes by C
        torch.testing.assert_close(ours.mean(), 4 * torch_mean)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: F.cross_entropy(torch.randn(4, 3), torch.tensor([0.0, 1.0, 2.0, 1.0])),
            r"cross_entropy: 'pred' and 'target' must have the same shape",
        ),
        (
            lambda: F.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 3, 1])),
            r"cross_entropy: class index 3 in 'target' is out of range for 3 classes",
        ),
        (
            lambda: F.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2])),
            r"cross_entropy: class-index 'target' must have shape \(4,\)",
        ),
        (
            lambda: F.cross_entropy(
                torch.randn(4, 3), torch.zeros(4, dtype=torch.long), weight=torch.ones(4)
            ),
            r"cross_entropy: 'weight' must have one entry per class, shape \(3,\)",
        ),
        (
            lambda: F.cross_entropy(
                torch.randn(4, 3), torch.zeros(4, dtype=torch.long), label_smoothing=1.5
            ),
            r"cross_entropy: option 'label_smoothing' must be a finite number >= 0.0 and <= 1.0",
        ),
        (
            lambda: F.cross_entropy(torch.randint(0, 3, (4, 3)), torch.zeros(4, dtype=torch.long)),
            r"cross_entropy: 'pred' must be a floating-point tensor of logits",
        ),
        (
            lambda: F.bce(torch.randn(4), torch.tensor([0.0, 1.0, 2.0, 1.0])),
            r"bce: 'target' must hold binary targets in \[0, 1\], got a value 2.0",
        ),
        (
            lambda: F.bce(torch.randn(4), torch.rand(4), input="probabilities"),
            r"bce: option 'input' must be one of 'logits', 'probs'",
        ),
        (
            lambda: F.bce(torch.tensor([0.5, 1.5, -0.2, 0.3]), torch.rand(4), input="probs"),
            r"bce: 'pred' must hold probabilities \(input='probs'\) in \[0, 1\]",
        ),
        (
            lambda: F.kl_div(torch.randn(2, 3), torch.rand(2, 3), temperature=0.0),
            r"kl_div: option 'temperature' must be a finite number > 0.0",
        ),
        (
            lambda: F.kl_div(torch.randn(2, 3), torch.rand(2, 3), reduction="elementwise_mean"),
            r"kl_div: option 'reduction' must be one of 'mean', 'batchmean', 'sum', 'none'",
        ),
        (
            lambda: F.kl_div(torch.randn(2, 3), torch.randn(2, 3) - 5),
            r"kl_div: 'target' must hold probabilities \(or pass log_target=True\)",
        ),
        (
            lambda: F.hinge(torch.randn(3), torch.ones(3), margin=-1.0),
            r"hinge: option 'margin' must be a finite number >= 0.0, got -1.0",
        ),
        (
            lambda: F.hinge(torch.randn(3, 2), torch.ones(3, 2), mode="multiclass"),
            r"hinge: class-index 'target' must be an integer tensor",
        ),
        (
            lambda: F.hinge(torch.randn(3), torch.ones(3), mode="svm"),
            r"hinge: option 'mode' must be one of 'binary', 'multiclass', got 'svm'",
        ),
        (
            lambda: losses.CrossEntropyLoss(weight=[1.0, -2.0]),
            r"cross_entropy: option 'weight' must hold finite values >= 0",
        ),
        (
            lambda: losses.BCELoss(pos_weight=float("nan")),
            r"bce: option 'pos_weight' must be a finite number >= 0.0, got nan",
        ),
    ],
)
def test_bad_input_names_loss_and_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.usefixtures("kernel_mode")
def test_weighted_cross_entropy_with_an_ignore_index_outside_the_classes():
    logits = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 255, 2, 1, 255, 2])
    weight = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    ours = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    torch.testing.assert_close(
        ours, TF.cross_entropy(logits, target, weight=weight, ignore_index=255)
    )
    loss = losses.CrossEntropyLoss(weight=[1.0, 2.0, 0.5], ignore_index=255)
    _, counts = loss.measured_components(logits.float(), target)
    assert counts["cross_entropy"].item() == pytest.approx(1.0 + 0.5 + 2.0 + 0.5)


@pytest.mark.parametrize("ignore_index", [True, 1.0, "1", None])
def test_cross_entropy_refuses_an_ignore_index_that_is_no_int(ignore_index):
    with pytest.raises(
        TypeError, match=r"^cross_entropy: option 'ignore_index' must be an int, got"
    ):
        F.cross_entropy(torch.zeros(4, 3), torch.tensor([0, 1, 2, 1]), ignore_index=ignore_index)


@pytest.mark.usefixtures("kernel_mode")
def test_cross_entropy_takes_a_numpy_integer_ignore_index():
    logits = torch.randn(4, 3, generator=_seeded(3), requires_grad=True)
    target = torch.tensor([0, 1, 2, 1])
    expected = TF.cross_entropy(logits, target, ignore_index=1)
    torch.testing.assert_close(F.cross_entropy(logits, target, ignore_index=np.int64(1)), expected)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_multiclass_hinge_accepts_any_integer_target(dtype):
    scores = torch.randn(6, 4, generator=_seeded(4))
    target = torch.tensor([0, 3, 1, 2, 2, 0])
    expected = TF.multi_margin_loss(scores, target) * 4
    torch.testing.assert_close(F.hinge(scores, target.to(dtype), mode="multiclass"), expected)
