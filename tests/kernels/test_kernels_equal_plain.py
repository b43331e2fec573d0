"""Every kernel gives the plain version's values and gradients, on both sides of its threshold.

The plain version is the same loss with :func:`lossplug.kernels.disabled`; the kernel runs
where :data:`lossplug.kernels.THRESHOLDS` lets it, which the tests check by the autograd node
that computed the loss.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import kernels_from_any_size
from torch import Tensor

import lossplug
from lossplug import functional as LF
from lossplug import kernels
from lossplug.kernels import THRESHOLDS
from lossplug.kernels.class_softmax import LARGE_POSITIONS, takes_large_path

Loss = Callable[[Tensor, Tensor], Tensor]

#: kernel name -> (loss, target maker, the autograd node's name when the kernel ran)
CASES: dict[str, tuple[Loss, str, str]] = {
    "cross_entropy": (LF.cross_entropy, "index", "_CrossEntropyBackward"),
    "poly1_cross_entropy": (LF.poly1, "index", "_Poly1CrossEntropyBackward"),
    "multiclass_hinge": (
        lambda x, y: LF.hinge(x, y, mode="multiclass", squared=True),
        "index",
        "_MulticlassHingeSumBackward",
    ),
    "sigmoid_focal": (lambda x, y: LF.focal(x, y, alpha=0.25), "binary", "_SigmoidFocalBackward"),
    "softmax_statistics": (LF.dice, "index", "_OverlapStatsBackward"),
    "linear_in_target": (LF.bce, "binary", "_LinearInTargetBackward"),
}
#: other losses on the same kernels: name -> (loss, target maker, kernel)
EXTRA_LOSSES: dict[str, tuple[Loss, str, str]] = {
    "tversky": (
        lambda x, y: LF.tversky(x, y, alpha=0.3, beta=0.7, gamma=0.75),
        "index",
        "softmax_statistics",
    ),
    "dice_ce": (
        lambda x, y: LF.dice_ce(x, y, ignore_index=0, dice_weight=0.5),
        "index",
        "softmax_statistics",
    ),
    "focal_multiclass": (
        lambda x, y: LF.focal(x, y, mode="multiclass", gamma=1.5, ignore_index=0),
        "index",
        "cross_entropy",
    ),
    "poly1_alpha_ignore_index": (
        lambda x, y: LF.poly1(x, y, epsilon=2.0, alpha=[0.5, 1.0, 2.0, 0.1], ignore_index=0),
        "index",
        "poly1_cross_entropy",
    ),
    "poly1_components": (
        lambda x, y: sum(LF.poly1_components(x, y, epsilon=-0.5, reduction="sum").values()),
        "index",
        "poly1_cross_entropy",
    ),
    "bce_none": (lambda x, y: LF.bce(x, y, reduction="none").sum(), "binary", "linear_in_target"),
    "kl_div": (LF.kl_div, "probs", "linear_in_target"),
    "kl_div_temperature": (
        lambda x, y: LF.kl_div(x, y, temperature=2.0, reduction="sum"),
        "probs",
        "linear_in_target",
    ),
}


def inputs(shape: tuple[int, ...], target: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(sum(shape))
    logits = (torch.randn(shape, generator=generator, dtype=dtype) * 3).requires_grad_()
    if target == "binary":
        labels = torch.randint(0, 2, shape, generator=generator).to(dtype)
    elif target == "probs":
        labels = torch.randn(shape, generator=generator, dtype=dtype).softmax(1)
    else:
        labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
    return logits, labels


def nodes(loss: Tensor) -> set[str]:
    """The names of the autograd nodes behind ``loss``."""
    seen, todo = set(), [loss.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [next_node for next_node, _ in node.next_functions]
    return {type(node).__name__ for node in seen}


def value_and_grad(loss: Loss, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, set]:
    value = loss(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    return value, grad, nodes(value)


def sizes_around(name: str) -> list[tuple[int, ...]]:
    """A small input, and (for a threshold above 0) inputs just below and at it."""
    minimum = THRESHOLDS[name].minimum
    small = [(4, 5, 3, 2)]
    if minimum == 0:
        return small
    rows = -(-minimum // 1000)
    return [*small, (rows - 1, 1000), (rows, 1000)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_equals_the_plain_version_on_both_sides_of_its_threshold(name, dtype):
    loss, target_kind, node = CASES[name]
    for shape in sizes_around(name):
        logits, target = inputs(shape, target_kind, dtype)
        value, grad, ran = value_and_grad(loss, logits, target)
        assert (node in ran) is (logits.numel() >= THRESHOLDS[name].minimum), shape
        with kernels.disabled():
            plain_value, plain_grad, plain_ran = value_and_grad(loss, logits, target)
        assert node not in plain_ran
        torch.testing.assert_close(value, plain_value)
        torch.testing.assert_close(grad, plain_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", sorted(EXTRA_LOSSES))
def test_the_other_losses_on_a_kernel_equal_their_plain_versions(name, dtype, monkeypatch):
    loss, target_kind, kernel = EXTRA_LOSSES[name]
    kernels_from_any_size(monkeypatch, kernel)
    logits, target = inputs((2, 4, 6, 5), target_kind, dtype)
    value, grad, ran = value_and_grad(loss, logits, target)
    assert CASES[kernel][2] in ran
    with kernels.disabled():
        plain_value, plain_grad, plain_ran = value_and_grad(loss, logits, target)
    assert CASES[kernel][2] not in plain_ran
    torch.testing.assert_close(value, plain_value)
    torch.testing.assert_close(grad, plain_grad)


def test_the_environment_switch_turns_every_kernel_off(monkeypatch):
    kernels_from_any_size(monkeypatch)
    monkeypatch.setenv("LOSSPLUG_KERNELS", "0")
    assert not kernels.enabled()
    for name, (loss, target_kind, node) in CASES.items():
        logits, target = inputs((4, 5, 3), target_kind, torch.float64)
        assert node not in nodes(loss(logits, target)), name
    monkeypatch.setenv("LOSSPLUG_KERNELS", "1")
    assert kernels.enabled()


@pytest.mark.parametrize("name", ["cross_entropy", "multiclass_hinge"])
def test_per_sample_gradients_under_vmap_equal_the_plain_ones(name, monkeypatch):
    """The hinge kernel runs under ``torch.func``; cross-entropy leaves the transforms to torch."""
    kernels_from_any_size(monkeypatch, name)
    loss, _, node = CASES[name]
    logits, target = inputs((6, 5), "index", torch.float64)
    logits = logits.detach()
    nodes_seen: set[str] = set()

    def per_sample(row: Tensor, label: Tensor) -> Tensor:
        value = loss(row[None], label[None])
        nodes_seen.update(nodes(value))
        return value

    grads = torch.func.vmap(torch.func.grad(per_sample))(logits, target)
    # under vmap a kernel's node is its generated twin, e.g. _MulticlassHingeSumGeneratedBackward
    kernel_ran = any(seen.startswith(node.removesuffix("Backward")) for seen in nodes_seen)
    assert kernel_ran is (name == "multiclass_hinge")
    with kernels.disabled():
        expected = torch.func.vmap(torch.func.grad(per_sample))(logits, target)
    torch.testing.assert_close(grads, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["softmax_statistics", "tversky", "dice_ce", "focal_multiclass"])
def test_the_large_input_softmax_equals_the_plain_version_on_both_sides_of_its_size(name, dtype):
    """From LARGE_POSITIONS positions the kernels take exp2 passes (and flat label offsets)."""
    loss = CASES[name][0] if name in CASES else EXTRA_LOSSES[name][0]
    for positions in (LARGE_POSITIONS - 1, LARGE_POSITIONS):
        logits, target = inputs((1, 3, positions), "index", dtype)
        large = positions >= LARGE_POSITIONS
        assert takes_large_path(logits.detach()) is large
        value = loss(logits, target)
        if name == "focal_multiclass":
            node = "_TargetCrossEntropyBackward"
            assert (node in nodes(value)) is large
        else:
            node = "_OverlapStatsBackward"
            assert node in nodes(value)
        (grad,) = torch.autograd.grad(value, logits, retain_graph=True)
        (again,) = torch.autograd.grad(value, logits)  # recomputed from the logits, to the bit
        assert torch.equal(grad, again)
        with kernels.disabled():
            plain_value, plain_grad, plain_ran = value_and_grad(loss, logits, target)
        assert node not in plain_ran
        torch.testing.assert_close(value, plain_value)
        torch.testing.assert_close(grad, plain_grad)


def test_a_label_out_of_range_is_refused_on_the_large_input_path_with_value_checks_off():
    logits, target = inputs((1, 3, LARGE_POSITIONS), "index", torch.float32)
    target[0, 5] = 7  # its flat offset would read another class's entry
    with lossplug.value_checks(False), pytest.raises(ValueError, match="class index 7"):
        LF.dice(logits, target)
