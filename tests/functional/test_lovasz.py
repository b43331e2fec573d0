"""Lovász-softmax and Lovász hinge: a direct loop over the extension's definition, kornia,
ignored positions, reductions, gradients and bad input."""

from __future__ import annotations

import kornia.losses
import pytest
import torch

from lossplug.functional import lovasz_hinge, lovasz_softmax
from lossplug.losses import LovaszHingeLoss, LovaszSoftmaxLoss
from lossplug.registry import build_loss

N, C, H, W = 3, 4, 5, 6


def jaccard_loss(foreground: list[bool], mistakes: set[int]) -> float:
    """The Jaccard loss 1 - |g - M| / |g + M| (set difference over union) with mistakes M."""
    truth = {i for i, g in enumerate(foreground) if g}
    union = len(truth | mistakes)
    return 1 - len(truth - mistakes) / union if union else 0.0


def extension(errors: list[float], foreground: list[bool]) -> float:
    """The Lovász extension at ``errors``: sum_i m_(i) (Δ({π_1..π_i}) - Δ({π_1..π_{i-1}}))."""
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    value, previous = 0.0, 0.0
    for rank in range(len(order)):
        current = jaccard_loss(foreground, set(order[: rank + 1]))
        value += errors[order[rank]] * (current - previous)
        previous = current
    return value


def softmax_by_loops(probs, labels, *, per_image, classes, ignore_index=None) -> float:
    groups = (
        [(probs[n], labels[n]) for n in range(len(labels))]
        if per_image
        else [(probs.movedim(0, 1).flatten(1), labels.flatten())]
    )
    losses = []
    for group_probs, group_labels in groups:
        p = group_probs.flatten(1).tolist()
        y = group_labels.flatten().tolist()
        kept = [i for i, label in enumerate(y) if label != ignore_index]
        per_class = []
        for c in range(len(p)):
            fg = [y[i] == c for i in kept]
            if classes == "present" and not any(fg):
                continue
            per_class.append(
                extension([abs(g - p[c][i]) for g, i in zip(fg, kept, strict=True)], fg)
            )
        losses.append(sum(per_class) / len(per_class) if per_class else 0.0)
    return sum(losses) / len(losses)


def hinge_by_loops(logits, target, *, per_image, ignore_index=None) -> float:
    groups = list(zip(logits, target, strict=True)) if per_image else [(logits, target)]
    losses = []
    for z, y in groups:
        pairs = [(s, t) for s, t in zip(z.flatten().tolist(), y.flatten().tolist(), strict=True)]
        pairs = [(s, t) for s, t in pairs if t != ignore_index]
        errors = [max(0.0, 1 - s * (2 * t - 1)) for s, t in pairs]
        losses.append(extension(errors, [t == 1 for _, t in pairs]))
    return sum(losses) / len(losses)


def multiclass_data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, C, (N, H, W), generator=gen)
    labels[0] = labels[0].remainder(C - 1)  # class 3 absent from image 0
    return logits, labels


def binary_data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, 1, H, W, generator=gen, dtype=torch.float64) * 2
    target = (torch.rand(N, 1, H, W, generator=gen) > 0.6).long()
    target[1] = 0  # an image of no foreground
    return logits, target


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all"])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_lovasz_softmax_matches_a_loop_over_the_definition(per_image, classes, ignore_index):
    logits, labels = multiclass_data(1)
    if ignore_index is not None:
        labels[:, 0] = ignore_index
        labels[2] = ignore_index  # an image with no kept position
    options = {"per_image": per_image, "classes": classes, "ignore_index": ignore_index}
    expected = softmax_by_loops(logits.softmax(1), labels, **options)
    actual = lovasz_softmax(logits, labels, **options)
    torch.testing.assert_close(actual.item(), expected, rtol=1e-10, atol=1e-12)
    from_probs = lovasz_softmax(logits.softmax(1), labels, input="probs", **options)
    torch.testing.assert_close(from_probs, actual)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_lovasz_hinge_matches_a_loop_over_the_definition(per_image, ignore_index):
    logits, target = binary_data(2)
    if ignore_index is not None:
        target[:, :, 0] = ignore_index
    options = {"per_image": per_image, "ignore_index": ignore_index}
    expected = hinge_by_loops(logits, target, **options)
    actual = lovasz_hinge(logits, target, **options)
    torch.testing.assert_close(actual.item(), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lovasz_hinge(logits[:, 0], target[:, 0], **options), actual)


def test_lovasz_softmax_matches_kornia_per_image_over_all_classes():
    logits, labels = multiclass_data(3)
    reference = kornia.losses.lovasz_softmax_loss(logits, labels)
    actual = lovasz_softmax(logits, labels, per_image=True, classes="all")
    torch.testing.assert_close(actual, reference, rtol=1e-12, atol=1e-12)


def test_lovasz_hinge_matches_kornia_per_image():
    logits, target = binary_data(4)
    reference = kornia.losses.lovasz_hinge_loss(logits, target[:, 0])
    torch.testing.assert_close(lovasz_hinge(logits, target), reference, rtol=1e-12, atol=1e-12)


def test_the_extension_is_the_jaccard_loss_at_binary_errors():
    # errors in {0, 1} mark the mistakes: the surrogate is then the Jaccard loss itself
    probs = torch.tensor([[[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]])
    labels = torch.tensor([[0, 0, 1, 1]])
    iou = torch.tensor([1 / 3, 1 / 3])  # each class: 1 right of 3 in the union
    expected = 1 - iou.mean()
    torch.testing.assert_close(lovasz_softmax(probs, labels, input="probs"), expected)


def test_a_perfect_prediction_loses_zero():
    labels = torch.tensor([[0, 1, 2, 1]])
    probs = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    assert lovasz_softmax(probs, labels, input="probs").item() == 0.0
    logits = torch.tensor([[3.0, -2.0, 1.0]])
    assert lovasz_hinge(logits, torch.tensor([[1, 0, 1]])).item() == 0.0


@pytest.mark.parametrize("per_image", [False, True])
def test_gradcheck(per_image):
    logits, labels = multiclass_data(5)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: lovasz_softmax(z, labels, per_image=per_image, ignore_index=0), (logits,)
    )
    binary, target = binary_data(5)
    binary.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: lovasz_hinge(z, target, per_image=per_image), (binary,)
    )


def test_ignored_positions_get_no_gradient():
    logits, labels = multiclass_data(6)
    labels[:, :2] = -1
    logits.requires_grad_(True)
    lovasz_softmax(logits, labels, ignore_index=-1).backward()
    assert logits.grad[:, :, :2].abs().max() == 0
    assert logits.grad[:, :, 2:].abs().max() > 0


@pytest.mark.parametrize(
    ("per_image", "shape"), [(True, (N,)), (False, (1,))], ids=["per_image", "batch"]
)
def test_reduction_none_gives_one_loss_per_image_or_batch(per_image, shape):
    logits, labels = multiclass_data()
    unreduced = lovasz_softmax(logits, labels, per_image=per_image, reduction="none")
    assert unreduced.shape == shape
    torch.testing.assert_close(
        lovasz_softmax(logits, labels, per_image=per_image), unreduced.mean()
    )
    torch.testing.assert_close(
        lovasz_softmax(logits, labels, per_image=per_image, reduction="sum"), unreduced.sum()
    )
    binary, target = binary_data()
    assert lovasz_hinge(binary, target, per_image=per_image, reduction="none").shape == shape


@pytest.mark.parametrize("per_image", [False, True])
def test_an_empty_batch_gives_zero(per_image):
    pred = torch.zeros(0, 3, 4, 4, requires_grad=True)
    value = lovasz_softmax(pred, torch.zeros(0, 4, 4, dtype=torch.long), per_image=per_image)
    value.backward()
    assert value.item() == 0.0
    binary = torch.zeros(0, 4, 4, requires_grad=True)
    assert lovasz_hinge(binary, torch.zeros(0, 4, 4), per_image=per_image).item() == 0.0


def test_modules_match_functionals_and_keep_their_options():
    logits, labels = multiclass_data(7)
    loss = build_loss("lovasz_softmax", per_image=True, classes="all", ignore_index=0)
    assert isinstance(loss, LovaszSoftmaxLoss)
    expected = lovasz_softmax(logits, labels, per_image=True, classes="all", ignore_index=0)
    torch.testing.assert_close(loss(logits, labels), expected)
    assert loss.components(logits, labels) == {"lovasz_softmax": loss(logits, labels)}
    assert "classes='all'" in repr(loss)
    assert LovaszSoftmaxLoss(input="probs").input_space == "probs"
    hinge = build_loss("lovasz_hinge", per_image=False)
    assert isinstance(hinge, LovaszHingeLoss) and hinge.class_dim is None
    binary, target = binary_data(7)
    torch.testing.assert_close(hinge(binary, target), lovasz_hinge(binary, target, per_image=False))


@pytest.mark.parametrize(
    ("loss", "options", "error", "match"),
    [
        ("lovasz_softmax", {"classes": "some"}, ValueError, "lovasz_softmax: option 'classes'"),
        ("lovasz_softmax", {"input": "log_probs"}, ValueError, "lovasz_softmax: option 'input'"),
        ("lovasz_softmax", {"per_image": "yes"}, TypeError, "lovasz_softmax: option 'per_image'"),
        ("lovasz_softmax", {"ignore_index": 0.5}, TypeError, "lovasz_softmax: option 'ignore"),
        ("lovasz_hinge", {"per_image": 1}, TypeError, "lovasz_hinge: option 'per_image'"),
        ("lovasz_hinge", {"reduction": "batchmean"}, ValueError, "lovasz_hinge: option 'reduct"),
    ],
)
def test_bad_options_fail_at_construction_and_call(loss, options, error, match):
    with pytest.raises(error, match=match):
        build_loss(loss, **options)
    functional = {"lovasz_softmax": lovasz_softmax, "lovasz_hinge": lovasz_hinge}[loss]
    pred, target = multiclass_data() if loss == "lovasz_softmax" else binary_data()
    with pytest.raises(error, match=match):
        functional(pred, target, **options)


def test_bad_inputs_name_the_loss_and_the_fix():
    logits, labels = multiclass_data()
    with pytest.raises(ValueError, match="lovasz_softmax: class index 4"):
        lovasz_softmax(logits, labels + 1)
    with pytest.raises(TypeError, match="lovasz_softmax: 'target' must hold class indices"):
        lovasz_softmax(logits, logits.softmax(1))
    with pytest.raises(ValueError, match=r"at least 2 classes .* use lovasz_hinge"):
        lovasz_softmax(logits[:, :1], labels.clamp(max=0))
    with pytest.raises(ValueError, match="lovasz_softmax: 'pred' must hold probabilities"):
        lovasz_softmax(logits, labels, input="probs")
    binary, target = binary_data()
    with pytest.raises(ValueError, match="lovasz_hinge: binary 'target' must hold values in"):
        lovasz_hinge(binary, target * 2)
    with pytest.raises(ValueError, match="lovasz_hinge: 'pred' and 'target' must have the same"):
        lovasz_hinge(binary, target[:, 0])
