"""Dice and Tversky losses: reference values, edge cases, gradients, dtypes and bad input."""

from __future__ import annotations

import math

import kornia.losses
import monai.losses
import pytest
import torch
import torch.nn.functional as TF

from lossplug.functional.overlap import dice, dice_ce_components, tversky
from lossplug.losses.overlap import DiceLoss, TverskyLoss
from lossplug.registry import build_loss

N, C, H, W = 3, 4, 5, 6


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def multiclass_data(seed: int = 0, dtype: torch.dtype = torch.float32):
    gen = seeded(seed)
    logits = torch.randn(N, C, H, W, generator=gen, dtype=dtype) * 2
    labels = torch.randint(0, C, (N, H, W), generator=gen)
    return logits, labels


def multilabel_data(seed: int = 0, channels: int = C):
    gen = seeded(seed)
    logits = torch.randn(N, channels, H, W, generator=gen) * 2
    target = (torch.rand(N, channels, H, W, generator=gen) > 0.6).float()
    return logits, target


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return TF.one_hot(labels, num_classes).movedim(-1, 1).double()


# --- brute-force reference: explicit one-hot, a loop over groups and classes -----------------


def dice_score(s_nr: float = 1e-5, s_dr: float = 1e-5, jaccard: bool = False):
    def score(inter, p_sum, t_sum):
        if jaccard:
            return (inter + s_nr) / (p_sum + t_sum - inter + s_dr)
        return (2 * inter + s_nr) / (p_sum + t_sum + s_dr)

    return score


def tversky_score(alpha: float, beta: float, s_nr: float = 1e-5, s_dr: float = 1e-5):
    def score(inter, p_sum, t_sum):
        return (inter + s_nr) / (inter + alpha * (p_sum - inter) + beta * (t_sum - inter) + s_dr)

    return score


def brute_force(
    probs, target, score, *, gamma=1.0, batch=False, include_background=True, weight=None
):
    """Mean over groups (samples, or the whole batch) of the class-weighted mean class loss."""
    probs, target = probs.double(), target.double()
    groups = [list(range(probs.shape[0]))] if batch else [[n] for n in range(probs.shape[0])]
    first = 0 if include_background else 1
    classes = range(first, probs.shape[1])
    weights = [1.0] * probs.shape[1] if weight is None else list(weight)
    total = 0.0
    for group in groups:
        weighted, weight_sum = 0.0, 0.0
        for c in classes:
            p, t = probs[group, c].flatten(), target[group, c].flatten()
            inter = sum(float(a * b) for a, b in zip(p, t, strict=True))
            loss = (1 - score(inter, float(p.sum()), float(t.sum()))) ** gamma
            weighted += weights[c] * loss
            weight_sum += weights[c]
        total += weighted / weight_sum
    return torch.tensor(total / len(groups), dtype=torch.float64)


def assert_close(actual, expected, **tol):
    torch.testing.assert_close(actual.double(), expected.double(), **tol)


# --- reference values ---------------------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("jaccard", [False, True])
def test_dice_multiclass_matches_brute_force(batch, include_background, jaccard):
    logits, labels = multiclass_data()
    weight = [0.5, 1.0, 2.0, 3.0]
    expected = brute_force(
        logits.softmax(1),
        one_hot(labels, C),
        dice_score(1e-3, 1e-2, jaccard),
        batch=batch,
        include_background=include_background,
        weight=weight,
    )
    actual = dice(
        logits,
        labels,
        smooth_nr=1e-3,
        smooth_dr=1e-2,
        batch=batch,
        include_background=include_background,
        weight=torch.tensor(weight),
        jaccard=jaccard,
    )
    assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("with_channel", [True, False])
def test_dice_binary_matches_brute_force(with_channel):
    logits, target = multilabel_data(channels=1)
    if not with_channel:
        logits, target = logits[:, 0], target[:, 0]
    expected = brute_force(
        logits.sigmoid().reshape(N, 1, -1), target.reshape(N, 1, -1), dice_score()
    )
    assert_close(dice(logits, target, mode="binary"), expected, rtol=1e-5, atol=1e-6)


def test_dice_multilabel_matches_brute_force():
    logits, target = multilabel_data()
    expected = brute_force(logits.sigmoid(), target, dice_score(0.0, 1e-4))
    actual = dice(logits, target, mode="multilabel", smooth_nr=0.0, smooth_dr=1e-4)
    assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", [1.0, 0.75, 2.0])
@pytest.mark.parametrize("batch", [False, True])
def test_tversky_matches_brute_force_in_every_mode(gamma, batch):
    options = {"alpha": 0.3, "beta": 0.7, "gamma": gamma, "batch": batch}
    score = tversky_score(0.3, 0.7)
    logits, labels = multiclass_data()
    expected = brute_force(logits.softmax(1), one_hot(labels, C), score, gamma=gamma, batch=batch)
    assert_close(tversky(logits, labels, **options), expected, rtol=1e-5, atol=1e-6)

    logits, target = multilabel_data()
    expected = brute_force(logits.sigmoid(), target, score, gamma=gamma, batch=batch)
    actual = tversky(logits, target, mode="multilabel", **options)
    assert_close(actual, expected, rtol=1e-5, atol=1e-6)

    binary_logits, binary_target = logits[:, :1], target[:, :1]
    expected = brute_force(binary_logits.sigmoid(), binary_target, score, gamma=gamma, batch=batch)
    actual = tversky(binary_logits, binary_target, mode="binary", **options)
    assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_multiclass_soft_target_and_probs_input():
    logits, labels = multiclass_data()
    from_indices = dice(logits, labels, reduction="none")
    from_one_hot = dice(logits, one_hot(labels, C).float(), reduction="none")
    from_probs = dice(logits.softmax(1), labels, input="probs", reduction="none")
    torch.testing.assert_close(from_one_hot, from_indices)
    torch.testing.assert_close(from_probs, from_indices)
    # a genuinely soft target against the brute-force formula
    soft = torch.rand(N, C, H, W, generator=seeded(3)).softmax(1)
    expected = brute_force(logits.softmax(1), soft, tversky_score(0.2, 0.8))
    actual = tversky(logits, soft, alpha=0.2, beta=0.8)
    assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_integer_target_dtypes_match_long(dtype):
    logits, labels = multiclass_data()
    torch.testing.assert_close(dice(logits, labels.to(dtype)), dice(logits, labels))


# --- agreement with MONAI and kornia -------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dice_matches_monai_multiclass(batch, include_background, reduction):
    logits, labels = multiclass_data(1)
    options = {
        "smooth_nr": 1e-4,
        "smooth_dr": 1e-3,
        "batch": batch,
        "include_background": include_background,
        "reduction": reduction,
    }
    # MONAI wants the class-index target as (N, 1, *)
    reference = monai.losses.DiceLoss(softmax=True, to_onehot_y=True, **options)(
        logits, labels[:, None]
    )
    actual = dice(logits, labels, **options)
    assert_close(actual, reference.reshape(actual.shape), rtol=1e-5, atol=1e-6)


def test_jaccard_matches_monai_with_doubled_smoothing():
    # MONAI's jaccard is (2I + s_nr) / (2(P + T - I) + s_dr): our smoothing, doubled.
    logits, labels = multiclass_data(2)
    reference = monai.losses.DiceLoss(
        softmax=True, to_onehot_y=True, jaccard=True, smooth_nr=2e-2, smooth_dr=2e-1
    )(logits, labels[:, None])
    actual = dice(logits, labels, jaccard=True, smooth_nr=1e-2, smooth_dr=1e-1)
    assert_close(actual, reference, rtol=1e-5, atol=1e-6)


def test_class_weighted_dice_matches_monai_unreduced():
    # MONAI's weighted "mean" divides by N*C, ours by N*sum(w); the unreduced w*L agree.
    logits, labels = multiclass_data(3)
    weight = [0.0, 1.0, 2.5, 0.5]
    reference = monai.losses.DiceLoss(
        softmax=True, to_onehot_y=True, weight=weight, reduction="none"
    )(logits, labels[:, None])
    actual = dice(logits, labels, weight=torch.tensor(weight), reduction="none")
    assert_close(actual, reference.reshape(N, C), rtol=1e-5, atol=1e-6)
    mean = dice(logits, labels, weight=torch.tensor(weight))
    assert_close(mean, reference.sum() / (N * sum(weight)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["binary", "multilabel"])
def test_dice_matches_monai_sigmoid(mode):
    logits, target = multilabel_data(4, channels=1 if mode == "binary" else C)
    reference = monai.losses.DiceLoss(sigmoid=True)(logits, target)
    assert_close(dice(logits, target, mode=mode), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.9, 0.1), (0.5, 0.5)])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
def test_tversky_matches_monai(alpha, beta, batch, include_background):
    logits, labels = multiclass_data(5)
    options = {
        "alpha": alpha,
        "beta": beta,
        "batch": batch,
        "include_background": include_background,
        "smooth_nr": 1e-3,
        "smooth_dr": 1e-3,
    }
    reference = monai.losses.TverskyLoss(softmax=True, to_onehot_y=True, **options)(
        logits, labels[:, None]
    )
    assert_close(tversky(logits, labels, **options), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["dice", "tversky"])
def test_ignore_index_matches_monai(loss):
    logits, labels = multiclass_data(6)
    labels[:, 0, :] = 255
    labels[0, 2, 3] = 255
    if loss == "dice":
        reference = monai.losses.DiceLoss(softmax=True, to_onehot_y=True, ignore_index=255)
        actual = dice(logits, labels, ignore_index=255)
    else:
        reference = monai.losses.TverskyLoss(
            softmax=True, to_onehot_y=True, alpha=0.2, beta=0.8, ignore_index=255
        )
        actual = tversky(logits, labels, alpha=0.2, beta=0.8, ignore_index=255)
    assert_close(actual, reference(logits, labels[:, None]), rtol=1e-5, atol=1e-6)


def test_dice_matches_kornia_macro():
    # kornia adds eps to the denominator only (our smooth_nr=0, smooth_dr=eps); its "macro"
    # average skips classes absent from a sample's target, so every class is present here.
    # Its default "micro" average pools all classes into one ratio and is not comparable.
    logits, labels = multiclass_data(7)
    labels[:, 0, :C] = torch.arange(C)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    reference = kornia.losses.dice_loss(logits, labels, average="macro", eps=1e-6, weight=weight)
    actual = dice(logits, labels, smooth_nr=0.0, smooth_dr=1e-6, weight=weight)
    assert_close(actual, reference, rtol=1e-5, atol=1e-6)


# --- Tversky's parameters -----------------------------------------------------------------


def test_tversky_with_half_half_is_dice_with_doubled_smoothing():
    # alpha = beta = 1/2: TI = (I + s) / ((P + T) / 2 + s) = (2I + 2s) / (P + T + 2s).
    logits, labels = multiclass_data(8)
    for smooth in (0.0, 1e-5, 0.1):
        expected = dice(logits, labels, smooth_nr=2 * smooth, smooth_dr=2 * smooth)
        actual = tversky(logits, labels, smooth_nr=smooth, smooth_dr=smooth)
        torch.testing.assert_close(actual, expected)


def test_swapping_alpha_and_beta_changes_the_multiclass_loss():
    logits, labels = multiclass_data(9)
    probs, target = logits.softmax(1), one_hot(labels, C).float()
    # pooled over classes, false positives and false negatives are the same number ...
    pooled_fp = (probs * (1 - target)).sum()
    pooled_fn = ((1 - probs) * target).sum()
    torch.testing.assert_close(pooled_fp, pooled_fn)
    # ... so only a per-class loss lets alpha and beta mean different things
    recall_heavy = tversky(logits, labels, alpha=0.2, beta=0.8)
    precision_heavy = tversky(logits, labels, alpha=0.8, beta=0.2)
    assert abs(float(recall_heavy - precision_heavy)) > 1e-3


def test_focal_tversky_exponent_is_applied_per_class():
    logits, labels = multiclass_data(10)
    plain = tversky(logits, labels, alpha=0.3, beta=0.7, reduction="none")
    focal = tversky(logits, labels, alpha=0.3, beta=0.7, gamma=0.75, reduction="none")
    torch.testing.assert_close(focal, plain**0.75)


# --- empty masks and absent classes --------------------------------------------------------


EMPTY_INPUTS = {
    "multiclass": (torch.zeros(0, C, H, W), torch.zeros(0, H, W, dtype=torch.long)),
    "multilabel": (torch.zeros(0, C, H, W), torch.zeros(0, C, H, W)),
    "binary": (torch.zeros(0, H, W), torch.zeros(0, H, W)),
}


@pytest.mark.parametrize("loss", [dice, tversky])
@pytest.mark.parametrize(
    ("mode", "include_background"),
    [("multiclass", True), ("multiclass", False), ("multilabel", False), ("binary", True)],
)
def test_an_empty_batch_gives_zero_with_batch_statistics_or_without(loss, mode, include_background):
    pred, target = EMPTY_INPUTS[mode]
    pred = pred.clone().requires_grad_()
    options = {"mode": mode, "include_background": include_background, "ignore_index": 255}
    kept = (1 if mode == "binary" else C) - (not include_background)
    # one score per sample and class: none
    assert loss(pred, target, reduction="none", **options).shape == (0, kept)
    # one score per class: every class is absent from both (empty) sums, so it scores 1
    per_class = loss(pred, target, batch=True, reduction="none", **options)
    assert torch.equal(per_class, torch.zeros(kept))
    for batch in (False, True):
        value = loss(pred, target, batch=batch, **options)
        value.backward()
        assert value.item() == 0.0
        assert pred.grad.shape == pred.shape


def test_dice_ce_on_an_empty_batch_gives_zero_terms():
    pred, target = EMPTY_INPUTS["multiclass"]
    pred = pred.clone().requires_grad_()
    terms = dice_ce_components(pred, target, ignore_index=255)
    sum(terms.values()).backward()
    assert {name: term.item() for name, term in terms.items()} == {"dice": 0.0, "ce": 0.0}
    assert pred.grad.shape == pred.shape


@pytest.mark.parametrize("loss", [dice, tversky])
def test_all_background_targets_give_finite_loss_and_grads(loss):
    logits = torch.randn(2, 3, 4, 4, generator=seeded(11), requires_grad=True)
    value = loss(logits, torch.zeros(2, 4, 4, dtype=torch.long))
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0

    binary = torch.randn(2, 1, 4, 4, generator=seeded(12), requires_grad=True)
    value = loss(binary, torch.zeros(2, 1, 4, 4), mode="binary", smooth_nr=0.0, smooth_dr=0.0)
    value.backward()
    assert torch.isfinite(value)
    assert value > 0.99  # nothing to find, yet something predicted: a total miss
    assert torch.isfinite(binary.grad).all()


@pytest.mark.parametrize("loss", [dice, lambda *a, **k: dice(*a, jaccard=True, **k), tversky])
@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_absent_class_with_no_smoothing_scores_one_not_nan(loss, gamma):
    options = {} if loss is not tversky else {"gamma": gamma}
    probs = torch.zeros(2, 3, 4, 4, requires_grad=True)
    target = torch.zeros(2, 3, 4, 4)
    value = loss(
        probs, target, mode="multilabel", input="probs", smooth_nr=0.0, smooth_dr=0.0, **options
    )
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(probs.grad).all()
    # an absent class stays in the average as a perfect answer: one real class of three
    present = torch.zeros(1, 3, 4)
    present[0, 1] = 1.0
    pred = torch.zeros(1, 3, 4)
    per_class = loss(
        pred, present, mode="multilabel", input="probs", smooth_nr=0, smooth_dr=0, reduction="none"
    )
    assert per_class.tolist() == [[0.0, 1.0, 0.0]]


@pytest.mark.parametrize("loss", ["dice", "jaccard", "tversky"])
@pytest.mark.parametrize(
    ("smooth_nr", "smooth_dr"),
    # equal, large, unequal with a tiny denominator term (1 / s_dr^2 overflows float32), and
    # terms that round to 0 in float32
    [(1e-5, 1e-5), (1.0, 1.0), (1.0, 1e-20), (0.0, 1e-30), (1e-46, 1e-46)],
)
def test_absent_class_scores_one_with_a_zero_gradient_at_any_smoothing(loss, smooth_nr, smooth_dr):
    """The rule, not the formula: (0 + s) / (0 + s) is 1, but its derivative 1/s is not used."""
    probs = torch.zeros(2, 3, 4, 4, requires_grad=True)
    target = torch.zeros(2, 3, 4, 4)
    target[:, 1] = 1.0
    options = {"smooth_nr": smooth_nr, "smooth_dr": smooth_dr, "reduction": "none"}
    options |= {"mode": "multilabel", "input": "probs"}
    if loss == "tversky":
        per_class = tversky(probs, target, alpha=0.3, beta=0.7, **options)
        missed_denominator = 0.7 * 16.0  # beta * FN, with P = 0, T = 16, I = 0
    else:
        per_class = dice(probs, target, jaccard=loss == "jaccard", **options)
        missed_denominator = 16.0
    per_class.sum().backward()
    assert per_class[:, [0, 2]].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    expected_missed = 1 - smooth_nr / (missed_denominator + smooth_dr)
    torch.testing.assert_close(per_class[:, 1], torch.full((2,), expected_missed))
    assert torch.isfinite(probs.grad).all()
    assert probs.grad[:, [0, 2]].abs().max().item() == 0.0
    assert probs.grad[:, 1].abs().min().item() > 0.0


def test_focal_tversky_gradient_is_finite_at_a_perfect_prediction():
    target = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]])
    probs = target.clone().requires_grad_()
    value = tversky(probs, target, mode="binary", input="probs", gamma=0.75)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(probs.grad).all()


# --- ignore_index -----------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [dice, tversky])
def test_ignored_positions_do_not_count(loss):
    logits, labels = multiclass_data(13)
    ignored = torch.rand(N, H, W, generator=seeded(14)) < 0.3
    labels = labels.masked_fill(ignored, -1)
    value = loss(logits, labels, ignore_index=-1, reduction="none")
    for n in range(N):
        keep = ~ignored[n]
        kept_logits = logits[n][:, keep][None]  # (1, C, kept positions), built by hand
        kept_labels = labels[n][keep][None]
        by_hand = loss(kept_logits, kept_labels, reduction="none")
        torch.testing.assert_close(value[n], by_hand[0])
    # the logits at ignored positions do not matter, and get no gradient
    noisy = torch.where(ignored[:, None], 50 * torch.randn_like(logits), logits)
    noisy.requires_grad_()
    torch.testing.assert_close(loss(noisy, labels, ignore_index=-1, reduction="none"), value)
    loss(noisy, labels, ignore_index=-1).backward()
    assert (noisy.grad * ignored[:, None]).abs().max() == 0


def test_ignore_index_in_multilabel_mode_is_per_element():
    logits, target = multilabel_data(15)
    ignored = torch.rand(N, C, H, W, generator=seeded(16)) < 0.3
    target = target.masked_fill(ignored, 255)
    value = dice(logits, target, mode="multilabel", ignore_index=255, reduction="none")
    for n in range(N):
        for c in range(C):
            keep = ~ignored[n, c]
            by_hand = dice(logits[n, c][keep][None], target[n, c][keep][None], mode="binary")
            torch.testing.assert_close(value[n, c], by_hand)


# --- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "options"),
    [
        (dice, {}),
        (dice, {"jaccard": True, "batch": True, "include_background": False}),
        (dice, {"ignore_index": 9, "weight": torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)}),
        (tversky, {"alpha": 0.3, "beta": 0.7}),
        (tversky, {"alpha": 0.3, "beta": 0.7, "gamma": 0.75, "ignore_index": 9}),
        (tversky, {"gamma": 2.0, "batch": True}),
    ],
)
def test_gradcheck_multiclass(loss, options):
    logits = torch.randn(2, 3, 2, 3, generator=seeded(17), dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 2, 3), generator=seeded(18))
    labels[0, 0, 0] = 9
    if "ignore_index" not in options:
        labels[0, 0, 0] = 1
    logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: loss(x, labels, **options), (logits,))


@pytest.mark.parametrize("loss", [dice, tversky])
@pytest.mark.parametrize("mode", ["binary", "multilabel"])
def test_gradcheck_sigmoid_modes(loss, mode):
    logits = torch.randn(2, 2, 3, generator=seeded(19), dtype=torch.float64, requires_grad=True)
    target = (torch.rand(2, 2, 3, generator=seeded(20)) > 0.5).double()
    options = {"gamma": 0.75} if loss is tversky else {}
    assert torch.autograd.gradcheck(lambda x: loss(x, target, mode=mode, **options), (logits,))


@pytest.mark.parametrize("loss", [dice, tversky])
def test_extreme_logits_give_finite_values_and_grads(loss):
    logits, labels = multiclass_data(21)
    logits = (torch.sign(logits) * 100).requires_grad_()
    value = loss(logits, labels)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()

    binary = (torch.sign(torch.randn(N, 1, H, W, generator=seeded(22))) * 100).requires_grad_()
    target = (torch.rand(N, 1, H, W, generator=seeded(23)) > 0.5).float()
    value = loss(binary, target, mode="binary", smooth_nr=0.0, smooth_dr=0.0)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(binary.grad).all()


# --- low precision -----------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [dice, tversky])
def test_bf16_autocast_on_cpu_is_close_to_float32(loss):
    # logits from a conv under autocast come out in bfloat16; the loss must stay within 2e-2
    # of the float32 run (bfloat16 keeps ~3 significant digits of the logits).
    torch.manual_seed(24)
    net = torch.nn.Conv2d(3, C, 3, padding=1)
    images = torch.randn(2, 3, 16, 16)
    labels = torch.randint(0, C, (2, 16, 16))
    expected = loss(net(images), labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(images)
        value = loss(logits, labels)
    assert logits.dtype == torch.bfloat16
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    assert abs(value.item() - expected.item()) < 2e-2


@pytest.mark.parametrize("loss", [dice, tversky])
def test_float16_large_image_is_finite_and_close_to_float32(loss):
    logits = torch.randn(1, 2, 512, 512, generator=seeded(25)).half()
    labels = (torch.rand(1, 512, 512, generator=seeded(26)) > 0.5).long()
    # the trap: a float16 sum of the probabilities over the image overflows
    assert torch.isinf(logits.softmax(1).sum(dim=(2, 3))).any()
    value = loss(logits, labels)
    expected = loss(logits.float(), labels)
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-5)


# --- modules ----------------------------------------------------------------------------------


def test_modules_match_functionals_and_keep_their_options():
    logits, labels = multiclass_data(27)
    weight = [1.0, 0.5, 2.0, 1.5]
    dice_module = DiceLoss(weight=weight, batch=True, jaccard=True, smooth_nr=0.0)
    expected = dice(
        logits, labels, weight=torch.tensor(weight), batch=True, jaccard=True, smooth_nr=0.0
    )
    torch.testing.assert_close(dice_module(logits, labels), expected)
    assert dice_module.components(logits, labels)["dice"] == dice_module(logits, labels)
    assert "weight" in dict(dice_module.named_buffers())
    assert "jaccard=True" in repr(dice_module)

    tversky_module = TverskyLoss(alpha=0.3, beta=0.7, gamma=0.75, ignore_index=0)
    expected = tversky(logits, labels, alpha=0.3, beta=0.7, gamma=0.75, ignore_index=0)
    torch.testing.assert_close(tversky_module(logits, labels), expected)
    assert "gamma=0.75" in repr(tversky_module)


def test_input_space_follows_the_input_option_and_registry_builds_both():
    assert DiceLoss().input_space == "logits"
    assert TverskyLoss(input="probs").input_space == "probs"
    built = build_loss("tversky", alpha=0.1, beta=0.9, mode="binary")
    assert isinstance(built, TverskyLoss)
    assert (built.alpha, built.beta, built.mode) == (0.1, 0.9, "binary")
    assert isinstance(build_loss("dice", reduction="sum"), DiceLoss)


@pytest.mark.parametrize(
    ("options", "shape"),
    [
        ({}, (N, C)),
        ({"batch": True}, (C,)),
        ({"include_background": False}, (N, C - 1)),
        ({"batch": True, "include_background": False}, (C - 1,)),
    ],
)
def test_reduction_none_shapes(options, shape):
    logits, labels = multiclass_data()
    assert dice(logits, labels, reduction="none", **options).shape == shape
    assert TverskyLoss(reduction="none", **options)(logits, labels).shape == shape
    binary_logits, binary_target = multilabel_data(channels=1)
    assert dice(binary_logits, binary_target, mode="binary", reduction="none").shape == (N, 1)


def test_sum_and_mean_reductions_agree_with_unreduced():
    logits, labels = multiclass_data(28)
    weight = torch.tensor([0.0, 1.0, 2.0, 1.0])
    unreduced = tversky(logits, labels, weight=weight, alpha=0.4, beta=0.6, reduction="none")
    summed = tversky(logits, labels, weight=weight, alpha=0.4, beta=0.6, reduction="sum")
    mean = tversky(logits, labels, weight=weight, alpha=0.4, beta=0.6)
    torch.testing.assert_close(summed, unreduced.sum())
    torch.testing.assert_close(mean, unreduced.sum() / (N * weight.sum()))


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"smooth_nr": -1.0}, ValueError, "dice: option 'smooth_nr'"),
        ({"smooth_dr": math.nan}, ValueError, "dice: option 'smooth_dr'"),
        ({"smooth_dr": 1e39}, ValueError, "dice: option 'smooth_dr'"),  # inf in float32
        ({"smooth_nr": "a"}, TypeError, "dice: option 'smooth_nr'"),
        ({"mode": "multi"}, ValueError, "dice: option 'mode'"),
        ({"input": "log_probs"}, ValueError, "dice: option 'input'"),
        ({"reduction": "batchmean"}, ValueError, "dice: option 'reduction'"),
        ({"jaccard": "yes"}, ValueError, "dice: option 'jaccard'"),
        ({"ignore_index": 1.5}, TypeError, "dice: option 'ignore_index'"),
        ({"weight": [1.0, -1.0]}, ValueError, "dice: option 'weight'"),
    ],
)
def test_bad_dice_options_fail_at_construction_and_call(options, error, match):
    with pytest.raises(error, match=match):
        DiceLoss(**options)
    logits, labels = multiclass_data()
    call_options = dict(options)
    if "weight" in call_options:
        call_options["weight"] = torch.tensor(call_options["weight"])
    with pytest.raises(error, match=match):
        dice(logits, labels, **call_options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"alpha": -0.1}, "tversky: option 'alpha'"),
        ({"beta": -1}, "tversky: option 'beta'"),
        ({"gamma": 0.0}, "tversky: option 'gamma' must be a finite number > 0"),
        ({"gamma": -2.0}, "tversky: option 'gamma'"),
        ({"alpha": math.nan}, "tversky: option 'alpha'"),
        ({"gamma": math.inf}, "tversky: option 'gamma'"),
        ({"smooth_dr": -1e-5}, "tversky: option 'smooth_dr'"),
    ],
)
def test_bad_tversky_options_fail_at_construction_and_call(options, match):
    with pytest.raises(ValueError, match=match):
        TverskyLoss(**options)
    logits, labels = multiclass_data()
    with pytest.raises(ValueError, match=match):
        tversky(logits, labels, **options)


def _bad_calls() -> dict[str, tuple[type[Exception], str, tuple, dict]]:
    """Each bad call: (error, message after "<loss>: ", positional args, options)."""
    logits, labels = multiclass_data()
    binary_logits, binary_target = multilabel_data(channels=1)
    binary = {"mode": "binary"}
    return {
        "class index out of range": (
            ValueError,
            "class index 7 in 'target'",
            (logits, torch.full_like(labels, 7)),
            {},
        ),
        "index target of the wrong shape": (
            ValueError,
            "class-index 'target' must have shape",
            (logits, labels[:, 0]),
            {},
        ),
        "float target not shaped like pred": (
            ValueError,
            "float .* 'target' must have pred's shape",
            (logits, logits[:, 0]),
            {},
        ),
        "binary shape mismatch": (
            ValueError,
            "'pred' and 'target' must have the same shape",
            (binary_logits, binary_target[:, 0]),
            binary,
        ),
        "wrong number of class weights": (
            ValueError,
            "option 'weight' must hold one value per channel",
            (logits, labels),
            {"weight": torch.ones(3)},
        ),
        "binary target outside {0, 1}": (
            ValueError,
            r"binary 'target' must hold values in \{0, 1\}",
            (binary_logits, binary_target * 2),
            binary,
        ),
        "probabilities outside [0, 1]": (
            ValueError,
            "'pred' must hold probabilities",
            (binary_logits, binary_target),
            {**binary, "input": "probs"},
        ),
        "target not a tensor": (TypeError, "'target' must be a torch.Tensor", (logits, [0]), {}),
        "integer pred": (TypeError, "'pred' must be a floating-point", (labels, labels), {}),
        "bool class-index target": (
            TypeError,
            "class-index 'target' must be an integer",
            (logits, labels.bool()),
            {},
        ),
        "background dropped from one channel": (
            ValueError,
            "option 'include_background=False'",
            (binary_logits, binary_target),
            {**binary, "include_background": False},
        ),
        "ignore_index with a float target": (
            ValueError,
            "option 'ignore_index' needs class-index targets",
            (logits, logits.softmax(1)),
            {"ignore_index": 0},
        ),
    }


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize("case", list(BAD_CALLS))
@pytest.mark.parametrize("loss", [dice, tversky])
def test_bad_tensors_raise_errors_naming_loss_and_argument(loss, case):
    error, match, args, options = BAD_CALLS[case]
    with pytest.raises(error, match=f"{loss.__name__}: {match}"):
        loss(*args, **options)
