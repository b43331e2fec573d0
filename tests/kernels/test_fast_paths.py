"""The kernels and fast formulas behind the losses give the values and gradients of the plain ones.

References are written here from autograd's pieces (softmax, gather, one-hot sums, a dense
``(B, B, B)`` triplet tensor) or come from MONAI; the kernels are autograd functions with
hand-written backward passes (:mod:`lossplug.kernels`), the triplet sum is sort-based.
Memory tests compare peak tensor memory with the same peers as ``benchmarks/bench_losses.py``.
"""

from __future__ import annotations

import monai.losses
import pytest
import torch
import torch.nn.functional as TF

from benchmarks.benchkit import loss_step_peak_memory
from lossplug import functional as LF
from lossplug._validation import explain_class_target_errors
from lossplug.functional._distance import pairwise_distances
from lossplug.functional.focal import sigmoid_focal_terms
from lossplug.functional.overlap import dice_ce, dice_ce_components
from lossplug.kernels.sigmoid_focal import sigmoid_focal_kernel
from lossplug.kernels.softmax_statistics import softmax_overlap_stats

#: positions of a segmentation-sized input
LARGE_INPUT_POSITIONS = 32768


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logits_and_labels(n=2, c=4, s=30, seed=0, dtype=torch.float64):
    logits = (torch.randn(n, c, s, generator=seeded(seed), dtype=dtype) * 3).requires_grad_()
    labels = torch.randint(0, c, (n, s), generator=seeded(seed + 1))
    return logits, labels


# --------------------------------------------------------------- fused softmax statistics
def reference_stats(logits, labels, valid):
    probs = logits.softmax(1)
    one_hot = TF.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    mask = torch.ones_like(labels, dtype=logits.dtype) if valid is None else valid
    log_prob = logits.log_softmax(1).gather(1, labels[:, None]).squeeze(1)
    intersection = (probs * one_hot * mask[:, None]).sum(-1)
    return log_prob, intersection, (probs * mask[:, None]).sum(-1)


@pytest.mark.parametrize("with_valid", [False, True])
@pytest.mark.parametrize("with_log_prob", [False, True])
def test_softmax_overlap_stats_match_autograd_pieces(with_valid, with_log_prob):
    logits, labels = logits_and_labels()
    valid = (torch.rand(labels.shape, generator=seeded(9)) > 0.3).double() if with_valid else None
    fused = softmax_overlap_stats(logits, labels, valid, with_log_prob=with_log_prob)
    expected = reference_stats(logits, labels, valid)
    weights = [
        torch.randn(t.shape, generator=seeded(i), dtype=t.dtype) for i, t in enumerate(expected)
    ]
    if with_log_prob:
        torch.testing.assert_close(fused.log_prob, expected[0])
    else:
        assert fused.log_prob.numel() == 0
        weights[0] = torch.zeros_like(weights[0])
    torch.testing.assert_close(fused.intersection, expected[1])
    torch.testing.assert_close(fused.prob_sum, expected[2])
    outputs = fused if with_log_prob else fused[1:]
    used = weights if with_log_prob else weights[1:]
    (grad,) = torch.autograd.grad(
        sum((w * o).sum() for w, o in zip(used, outputs, strict=True)), logits
    )
    (expected_grad,) = torch.autograd.grad(
        sum((w * o).sum() for w, o in zip(weights, expected, strict=True)), logits
    )
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("output", [0, 1, 2])
def test_softmax_overlap_stats_gradcheck_each_output_alone(output):
    logits, labels = logits_and_labels(n=2, c=3, s=5)
    valid = torch.tensor([[1.0, 0, 1, 1, 0], [1, 1, 1, 0, 1]], dtype=torch.float64)

    def pick(x):
        return softmax_overlap_stats(x, labels, valid, with_log_prob=True)[output]

    assert torch.autograd.gradcheck(pick, (logits,))


def weighted_sum_gradient(outputs, logits, used, *, retain_graph=False):
    """Gradient of a random weighting of the chosen outputs (indices into ``outputs``)."""
    total = sum(
        (torch.randn(outputs[i].shape, generator=seeded(i), dtype=logits.dtype) * outputs[i]).sum()
        for i in used
    )
    return torch.autograd.grad(total, logits, retain_graph=retain_graph)[0]


@pytest.mark.parametrize("layout", ["small", "large", "large channels-last"])
@pytest.mark.parametrize("with_valid", [False, True])
@pytest.mark.parametrize("used", [(0,), (1,), (2,), (1, 2), (0, 1, 2)])
def test_softmax_overlap_stats_paths_for_small_and_large_inputs(layout, with_valid, used):
    """Small, large and channels-last (non-contiguous) logits alike."""
    positions = 40 if layout == "small" else LARGE_INPUT_POSITIONS // 2
    logits, labels = logits_and_labels(c=5, s=positions)
    if layout == "large channels-last":
        logits = logits.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
        assert not logits.is_contiguous()
    valid = (torch.rand(labels.shape, generator=seeded(4)) > 0.3).double() if with_valid else None
    fused = softmax_overlap_stats(logits, labels, valid, with_log_prob=True)
    expected = reference_stats(logits, labels, valid)
    for ours, reference in zip(fused, expected, strict=True):
        torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(
        weighted_sum_gradient(fused, logits, used), weighted_sum_gradient(expected, logits, used)
    )


def test_log_prob_gradient_alone_may_arrive_expanded():
    """The incoming gradient of log_prob alone (from a sum over positions) is an expand."""
    logits, labels = logits_and_labels(s=LARGE_INPUT_POSITIONS // 2)
    fused = softmax_overlap_stats(logits, labels, None, with_log_prob=True)
    expected = reference_stats(logits, labels, None)
    per_sample = torch.randn(2, generator=seeded(19), dtype=logits.dtype)  # -> (N, 1) expanded
    (grad,) = torch.autograd.grad(fused.log_prob.sum(1), logits, per_sample)
    (expected_grad,) = torch.autograd.grad(expected[0].sum(1), logits, per_sample)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("loss", ["dice", "tversky", "dice_ce"])
def test_targets_of_any_memory_layout_at_segmentation_size(loss):
    """A batch-last class-index target (non-contiguous) gives the contiguous target's values."""
    side = 128
    logits = torch.randn(2, 4, side, side, generator=seeded(17), requires_grad=True)
    batch_last = torch.randint(0, 4, (side, side, 2), generator=seeded(18)).permute(2, 0, 1)
    assert not batch_last.is_contiguous()
    fn = INDEX_TARGET_LOSSES[loss]
    value = fn(logits, batch_last)
    (grad,) = torch.autograd.grad(value, logits)
    expected = fn(logits, batch_last.contiguous())
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_an_error_the_target_check_cannot_explain_stays_torch_s():
    """When the check itself cannot run (meta tensors here, vmap elsewhere) the original stands."""
    pred = torch.empty(2, 3, 4, device="meta")
    target = torch.empty(2, 4, dtype=torch.long, device="meta")
    explained = explain_class_target_errors("dice", pred, target)
    with pytest.raises(RuntimeError, match="the kernel's own error"), explained:
        raise RuntimeError("the kernel's own error")


@pytest.mark.parametrize("positions", [30, LARGE_INPUT_POSITIONS // 2])
@pytest.mark.parametrize("with_valid", [False, True])
def test_softmax_overlap_stats_backward_twice_with_retain_graph(with_valid, positions):
    """A retained graph keeps its saved probabilities: the second pass gives the same gradient."""
    logits, labels = logits_and_labels(s=positions)
    valid = (torch.rand(labels.shape, generator=seeded(5)) > 0.3).double() if with_valid else None
    fused = softmax_overlap_stats(logits, labels, valid, with_log_prob=True)
    first = weighted_sum_gradient(fused, logits, (0, 1, 2), retain_graph=True)
    second = weighted_sum_gradient(fused, logits, (0, 1, 2))
    expected = weighted_sum_gradient(reference_stats(logits, labels, valid), logits, (0, 1, 2))
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)


def test_fused_statistics_are_once_differentiable_with_a_clear_error():
    logits, labels = logits_and_labels(s=4)
    (grad,) = torch.autograd.grad(LF.dice(logits, labels), logits, create_graph=True)
    with pytest.raises(RuntimeError, match=r"once_differentiable|twice"):
        grad.sum().backward()


# ------------------------------------------------------------------------------ dice + CE
def seg_data(seed=0, dtype=torch.float64):
    logits = (torch.randn(2, 4, 6, 5, generator=seeded(seed), dtype=dtype) * 2).requires_grad_()
    labels = torch.randint(0, 4, (2, 6, 5), generator=seeded(seed + 1))
    return logits, labels


@pytest.mark.parametrize(
    "options",
    [{}, {"include_background": False}, {"batch": True}, {"smooth_nr": 0.0, "smooth_dr": 1e-3}],
)
def test_dice_ce_matches_monai_dice_ce(options):
    logits, labels = seg_data()
    monai_options = {"smooth_nr": 1e-5, "smooth_dr": 1e-5, **options}
    reference = monai.losses.DiceCELoss(softmax=True, to_onehot_y=True, **monai_options)
    torch.testing.assert_close(
        dice_ce(logits, labels, **options), reference(logits, labels[:, None])
    )


def test_dice_ce_is_dice_plus_cross_entropy_with_gradients():
    logits, labels = seg_data(2)
    labels[0, :2] = 255
    parts = dice_ce_components(logits, labels, ignore_index=255, batch=True)
    expected_dice = LF.dice(logits, labels, ignore_index=255, batch=True)
    expected_ce = LF.cross_entropy(logits, labels, ignore_index=255)
    assert set(parts) == {"dice", "ce"}
    torch.testing.assert_close(parts["dice"], expected_dice)
    torch.testing.assert_close(parts["ce"], expected_ce)
    total = dice_ce(logits, labels, ignore_index=255, batch=True, dice_weight=0.3, ce_weight=2.0)
    (grad,) = torch.autograd.grad(total, logits)
    (expected_grad,) = torch.autograd.grad(0.3 * expected_dice + 2.0 * expected_ce, logits)
    torch.testing.assert_close(grad, expected_grad)


def test_dice_ce_gradcheck_and_all_ignored_gives_zero_ce():
    logits, labels = seg_data(4)
    assert torch.autograd.gradcheck(lambda x: dice_ce(x, labels, ignore_index=2), (logits,))
    ignored = torch.full_like(labels, 255)
    parts = dice_ce_components(logits, ignored, ignore_index=255)
    assert parts["ce"].item() == 0.0
    (grad,) = torch.autograd.grad(parts["ce"] + parts["dice"], logits)
    assert torch.isfinite(grad).all()


def test_dice_ce_half_precision_is_float32():
    logits, labels = seg_data(5, dtype=torch.float16)
    result = dice_ce(logits, labels)
    assert result.dtype == torch.float32 and torch.isfinite(result)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda x, y: dice_ce(x, y.float()),
            TypeError,
            "dice_ce: 'target' must hold class indices",
        ),
        (lambda x, y: dice_ce(x, y, dice_weight=-1.0), ValueError, "'dice_weight'"),
        (
            lambda x, y: dice_ce(x, y[:, :3]),
            ValueError,
            "dice_ce: class-index 'target' must have shape",
        ),
        (lambda x, y: dice_ce(x, y + 4), ValueError, "dice_ce: class index"),
    ],
)
def test_dice_ce_errors_name_the_loss(call, error, match):
    logits, labels = seg_data(6)
    with pytest.raises(error, match=match):
        call(logits, labels)


# ----------------------------------------------------------------------- binary focal
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.7])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_focal_function_matches_the_autograd_formula(gamma, soft):
    logits = (torch.randn(300, generator=seeded(7), dtype=torch.float64) * 6).requires_grad_()
    if soft:
        target = torch.rand(300, generator=seeded(8), dtype=torch.float64)
    else:
        target = torch.randint(0, 2, (300,), generator=seeded(8)).double()
    fused = sigmoid_focal_kernel(logits, target, gamma, None)
    expected = sigmoid_focal_terms(logits, target, gamma)
    torch.testing.assert_close(fused, expected)
    (grad,) = torch.autograd.grad(fused.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    torch.testing.assert_close(grad, expected_grad)
    assert torch.autograd.gradcheck(
        lambda x: sigmoid_focal_kernel(x, target[:20], gamma, None),
        (logits[:20].detach().requires_grad_(),),
    )


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0, 2.0])
@pytest.mark.parametrize("label", [0.0, 1.0, 0.3, 1e-7])
def test_sigmoid_focal_is_finite_and_accurate_at_extreme_logits(gamma, label):
    logits = torch.tensor([-1e4, -200.0, -90.0, -1e-3, 0.0, 1e-3, 50.0, 90.0, 200.0, 1e4])
    logits.requires_grad_()
    target = torch.full_like(logits, label)
    loss = sigmoid_focal_kernel(logits, target, gamma, None)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    expected = sigmoid_focal_terms(logits.double(), target.double(), gamma).float()
    # relative accuracy down to float32's smallest normal number
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=torch.finfo(torch.float32).tiny)


def test_binary_focal_with_a_target_that_needs_a_gradient_differentiates_it():
    logits = torch.randn(10, generator=seeded(9), dtype=torch.float64)
    target = torch.rand(10, generator=seeded(10), dtype=torch.float64).requires_grad_()
    loss = LF.focal(logits, target, alpha=0.25)
    (grad,) = torch.autograd.grad(loss, target)
    assert grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda t: LF.focal(logits, t, alpha=0.25), (target,))


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_multiclass_focal_factor_is_finite_where_pt_rounds_to_one(gamma):
    logits = torch.tensor([[200.0, -200.0, 0.0], [0.0, 1.0, 2.0]], requires_grad=True)
    loss = LF.focal(logits, torch.tensor([0, 2]), mode="multiclass", gamma=gamma, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert loss[0].item() == 0.0 and torch.isfinite(grad).all()
    p_t = logits[1].detach().softmax(0)[2].double()
    expected = float(-((1 - p_t) ** gamma) * p_t.log())
    assert loss[1].item() == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ metric learning
def dense_triplet(emb, labels, margin):
    """Every (a, p, n) triplet in one (B, B, B) tensor: the plain formula."""
    d = pairwise_distances(emb)
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool)
    valid = positive[:, :, None] & ~same[:, None, :]
    losses = torch.relu(d[:, :, None] - d[:, None, :] + margin) * valid
    return losses.sum(), (losses > 0).sum()


@pytest.mark.parametrize("margin", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sorted_triplet_sum_matches_the_dense_tensor(margin, reduction):
    emb = (torch.randn(40, 6, generator=seeded(11), dtype=torch.float64) * 0.3).requires_grad_()
    labels = torch.randint(0, 5, (40,), generator=seeded(12))
    total, active = dense_triplet(emb, labels, margin)
    expected = total if reduction == "sum" else total / active.clamp_min(1)
    result = LF.triplet(emb, labels, margin=margin, reduction=reduction)
    torch.testing.assert_close(result, expected)
    (grad,) = torch.autograd.grad(result, emb)
    (expected_grad,) = torch.autograd.grad(expected, emb)
    torch.testing.assert_close(grad, expected_grad)


def test_sorted_triplet_sum_with_tied_distances_counts_only_active_triplets():
    # a lattice gives many equal distances: a triplet with d(a, n) = d(a, p) + margin is inactive
    points = torch.tensor(
        [[float(i), float(j)] for i in range(4) for j in range(3)], dtype=torch.float64
    )
    labels = torch.arange(12) % 3
    total, active = dense_triplet(points, labels, margin=1.0)
    assert active > 0
    torch.testing.assert_close(LF.triplet(points, labels, margin=1.0), total / active)
    torch.testing.assert_close(LF.triplet(points, labels, margin=1.0, reduction="sum"), total)


def test_contrastive_sum_counts_each_pair_once():
    emb = torch.randn(9, 4, generator=seeded(13), dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 3])
    per_pair = LF.contrastive_components(emb, labels, neg_margin=3.0, reduction="none")
    summed = LF.contrastive_components(emb, labels, neg_margin=3.0, reduction="sum")
    for name in ("pos", "neg"):
        torch.testing.assert_close(summed[name], per_pair[name].sum())


# ------------------------------------------------------------------- multiclass hinge
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("margin", [0.0, 0.7])
def test_multiclass_hinge_gradient_is_torchs_multi_margin_gradient_times_c(squared, margin):
    """torch's ``multi_margin_loss`` (p=1 or 2) is the Weston-Watkins hinge divided by ``C``."""
    scores = torch.randn(2, 5, 3, 4, generator=seeded(40), dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 3, 4), generator=seeded(41))
    scores[0, :, 0, 0] = 1.5  # tied scores: with margin 0 every hinge sits at its kink
    labels[0, 0, 0] = 0
    ours = scores.clone().requires_grad_()
    LF.hinge(ours, labels, mode="multiclass", margin=margin, squared=squared).backward()
    rows = scores.movedim(1, -1).reshape(-1, 5).requires_grad_()
    p = 2 if squared else 1
    (5 * TF.multi_margin_loss(rows, labels.reshape(-1), p=p, margin=margin)).backward()
    torch.testing.assert_close(ours.grad, rows.grad.reshape(2, 3, 4, 5).movedim(-1, 1))


def test_multiclass_hinge_per_sample_gradients_under_vmap():
    scores = torch.randn(4, 6, generator=seeded(42), dtype=torch.float64)
    labels = torch.randint(0, 6, (4,), generator=seeded(43))

    def per_sample(row, label):
        return LF.hinge(row[None], label[None], mode="multiclass", squared=True)

    grads = torch.func.vmap(torch.func.grad(per_sample))(scores, labels)  # no host read on the CPU
    for i in range(4):
        row = scores[i : i + 1].clone().requires_grad_()
        (6 * TF.multi_margin_loss(row, labels[i : i + 1], p=2)).backward()
        torch.testing.assert_close(grads[i], row.grad[0])


def test_multiclass_hinge_refuses_a_second_derivative():
    scores = torch.randn(3, 4, generator=seeded(44)).requires_grad_()
    loss = LF.hinge(scores, torch.tensor([0, 1, 2]), mode="multiclass", squared=True)
    (grad,) = torch.autograd.grad(loss, scores, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


# ----------------------------------------------------------------------------- memory
def _peak(loss, *inputs):
    return loss_step_peak_memory(loss, inputs, torch.device("cpu"))


def test_triplet_memory_grows_with_pairs_not_triplets():
    labels = torch.arange(96) % 8
    emb = torch.randn(96, 16, generator=seeded(14)).requires_grad_()
    # the (B, B, B) float tensor alone would be 96^3 * 4 bytes = 3.5 MB
    assert _peak(LF.triplet, emb, labels) < 96**3 * 4 / 4


@pytest.mark.parametrize("loss", [LF.dice, LF.tversky])
def test_overlap_step_on_large_inputs_holds_the_gradient_and_five_position_buffers(loss):
    """Beyond the logits: the softmax that becomes the gradient (C per-position buffers) and
    five of four bytes per position — the labels' int32 flat offsets, target probabilities, the
    backward's target term, its shift and one per-class factor, reused for every class."""
    batch, classes, positions = 2, 4, 128 * 128
    logits = torch.randn(batch, classes, positions, generator=seeded(47)).requires_grad_()
    labels = torch.randint(0, classes, (batch, positions), generator=seeded(48))
    position_buffer = batch * positions * 4
    assert _peak(loss, logits, labels) <= (classes + 5) * position_buffer + 1024


def test_multiclass_hinge_holds_one_score_sized_buffer_like_torchs_fused_kernel():
    scores = torch.randn(256, 100, generator=seeded(45)).requires_grad_()
    labels = torch.randint(0, 100, (256,), generator=seeded(46))
    ours = _peak(lambda x, y: LF.hinge(x, y, mode="multiclass"), scores, labels)
    torchs = _peak(TF.multi_margin_loss, scores, labels)
    # torch's kernel needs no per-sample temporary; the hinge needs one float per sample
    assert torchs <= ours <= torchs + 256 * 4 + 64


def test_overlap_and_focal_losses_need_less_memory_than_monai():
    logits = torch.randn(2, 4, 64, 64, generator=seeded(15)).requires_grad_()
    labels = torch.randint(0, 4, (2, 64, 64), generator=seeded(16))
    pairs = [
        (LF.dice, monai.losses.DiceLoss(softmax=True, to_onehot_y=True)),
        (LF.tversky, monai.losses.TverskyLoss(softmax=True, to_onehot_y=True)),
        (dice_ce, monai.losses.DiceCELoss(softmax=True, to_onehot_y=True)),
        (
            lambda x, y: LF.focal(x, y, mode="multiclass"),
            monai.losses.FocalLoss(use_softmax=True, to_onehot_y=True),
        ),
    ]
    for ours, theirs in pairs:
        theirs_peak = _peak(lambda x, y, f=theirs: f(x, y[:, None]), logits, labels)
        assert _peak(ours, logits, labels) <= theirs_peak, theirs


# ------------------------------------------- class indices checked by torch's own kernels
INDEX_TARGET_LOSSES = {
    "dice": lambda x, y, **kw: LF.dice(x, y, **kw),
    "dice (probs)": lambda x, y, **kw: LF.dice(x.softmax(1), y, input="probs", **kw),
    "tversky": lambda x, y, **kw: LF.tversky(x, y, **kw),
    "focal": lambda x, y, **kw: LF.focal(x, y, mode="multiclass", **kw),
    "dice_ce": lambda x, y, **kw: dice_ce(x, y, **kw),
}


@pytest.mark.parametrize("loss", sorted(INDEX_TARGET_LOSSES))
@pytest.mark.parametrize(("bad", "ignore_index"), [(4, None), (-1, None), (9, 255), (-3, 255)])
@pytest.mark.parametrize("side", [6, 128])
def test_class_index_out_of_range_is_explained_on_the_cpu(loss, bad, ignore_index, side):
    """On the CPU the losses leave the index check to torch's kernels and explain their error."""
    logits = torch.randn(2, 4, side, side)
    target = torch.randint(0, 4, (2, side, side), generator=seeded(8))
    target[1, 2, 3] = bad
    if ignore_index is not None:
        target[0, 0, 0] = ignore_index
    name = loss.split()[0]
    with pytest.raises(ValueError, match=rf"^{name}: class index {bad} in 'target' is out of"):
        INDEX_TARGET_LOSSES[loss](logits, target, ignore_index=ignore_index)


@pytest.mark.parametrize("bad", [5, -1])
def test_multiclass_hinge_explains_torchs_refusal_and_makes_no_pass_of_its_own(bad):
    scores = torch.randn(6, 5, generator=seeded(47), requires_grad=True)
    labels = torch.randint(0, 5, (6,), generator=seeded(48))
    with torch.profiler.profile() as prof:
        LF.hinge(scores, labels, mode="multiclass").backward()
    ops = {event.key for event in prof.key_averages()}
    assert not ops & {"aten::aminmax", "aten::min", "aten::max", "aten::_local_scalar_dense"}
    labels[3] = bad
    with pytest.raises(ValueError, match=rf"^hinge: class index {bad} in 'target' is out of"):
        LF.hinge(scores, labels, mode="multiclass")


@pytest.mark.parametrize("loss", ["dice", "tversky", "focal", "dice_ce"])
def test_valid_class_indices_cost_no_pass_and_no_host_read_on_the_cpu(loss):
    """No ``aminmax`` over the target and no ``.item()``: torch's kernel does the checking.

    (From logits: probabilities given as ``pred`` are value-checked themselves.)
    """
    logits = torch.randn(2, 4, 6, 6, requires_grad=True)
    target = torch.randint(0, 4, (2, 6, 6), generator=seeded(8))
    with torch.profiler.profile() as prof:
        INDEX_TARGET_LOSSES[loss](logits, target).backward()
    ops = {event.key for event in prof.key_averages()}
    assert not ops & {"aten::aminmax", "aten::min", "aten::max", "aten::_local_scalar_dense"}
