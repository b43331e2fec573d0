"""``mode: auto``: the mode a loss module takes from its first batch, then keeps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from lossplug import build_loss
from lossplug.losses.mode import infer_mode

FOCAL_MODES = ("binary", "multiclass", "multilabel")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("pred_shape", "target_shape", "dtype", "modes", "expected"),
    [
        ((8, 3), (8,), torch.long, FOCAL_MODES, "multiclass"),
        ((2, 4, 5, 5), (2, 5, 5), torch.long, FOCAL_MODES, "multiclass"),
        ((2, 4, 5, 5), (2, 5, 5), torch.uint8, FOCAL_MODES, "multiclass"),
        ((8,), (8,), torch.float32, FOCAL_MODES, "binary"),
        ((8,), (8,), torch.long, FOCAL_MODES, "binary"),
        ((2, 1, 5, 5), (2, 1, 5, 5), torch.float32, FOCAL_MODES, "binary"),
        ((2, 1, 5, 5), (2, 5, 5), torch.long, FOCAL_MODES, "binary"),
        ((8, 3), (8, 3), torch.float32, FOCAL_MODES, "multilabel"),
        ((8, 3), (8, 3), torch.float32, ("binary", "multiclass"), "binary"),  # hinge
    ],
)
def test_the_shapes_and_dtypes_decide(pred_shape, target_shape, dtype, modes, expected):
    pred, target = torch.zeros(pred_shape), torch.zeros(target_shape, dtype=dtype)
    assert infer_mode("focal", pred, target, modes) == expected


@pytest.mark.parametrize(
    ("pred_shape", "target_shape", "dtype"),
    [
        ((8, 3), (8, 4), torch.float32),
        ((8, 3), (8,), torch.float32),
        ((8, 3), (8, 3, 2), torch.long),
    ],
)
def test_shapes_that_fit_no_mode_are_refused_with_the_option_to_set(
    pred_shape, target_shape, dtype
):
    pred, target = torch.zeros(pred_shape), torch.zeros(target_shape, dtype=dtype)
    with pytest.raises(ValueError, match=r"focal: mode 'auto' cannot tell") as raised:
        build_loss("focal")(pred, target)
    assert "Fix: set the loss's mode to one of 'binary', 'multiclass', 'multilabel'" in str(
        raised.value
    )


def test_focal_by_default_on_a_multiclass_batch_is_the_multiclass_focal_loss():
    """Reference: the formula, -(1 - p_t)^gamma log p_t averaged, from torch's log-softmax."""
    logits = torch.randn(16, 5, generator=seeded(0), dtype=torch.float64)
    labels = torch.randint(0, 5, (16,), generator=seeded(1))
    loss = build_loss("focal", gamma=2.0)
    log_p = TF.log_softmax(logits, 1).gather(1, labels[:, None]).squeeze(1)
    expected = (-((1 - log_p.exp()) ** 2) * log_p).mean()
    torch.testing.assert_close(loss(logits, labels), expected)
    assert loss.mode == "multiclass" and "mode='multiclass'" in repr(loss)
    assert loss.class_dim == 1


def test_the_first_batch_decides_once():
    loss = build_loss("focal")
    loss(torch.zeros(4), torch.ones(4))
    assert loss.mode == "binary"
    with pytest.raises(ValueError, match="mode 'binary' takes a target shaped like pred"):
        loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("name", ["focal", "hinge", "dice", "tversky", "generalized_dice"])
def test_an_explicit_mode_that_does_not_fit_names_the_mode_to_set(name):
    loss = build_loss(name, mode="binary")
    with pytest.raises(ValueError, match=rf"{name}: 'pred' and 'target' must have the same") as e:
        loss(torch.randn(4, 3, 2), torch.randint(0, 3, (4, 2)))
    assert "set the loss's mode to 'multiclass' or 'auto'" in str(e.value)


@pytest.mark.parametrize("name", ["hinge", "dice", "tversky", "generalized_dice"])
def test_auto_gives_the_explicit_modes_value(name):
    logits = torch.randn(4, 3, 6, generator=seeded(2), dtype=torch.float64)
    labels = torch.randint(0, 3, (4, 6), generator=seeded(3))
    if name == "hinge":
        logits, labels = logits[:, :, 0], labels[:, 0]
    auto, explicit = build_loss(name, mode="auto"), build_loss(name, mode="multiclass")
    torch.testing.assert_close(auto(logits, labels), explicit(logits, labels), rtol=0, atol=0)
    assert auto.mode == "multiclass"


def test_the_input_checks_see_the_decided_class_dimension():
    """Probabilities given to focal (a logits loss) on a multiclass batch: the misuse check
    reads the softmax along dim 1 only once auto has decided multiclass."""
    from lossplug import InputMisuseError, detect_misuse

    probs = torch.softmax(torch.randn(32, 4, generator=seeded(4)), 1)
    labels = torch.randint(0, 4, (32,), generator=seeded(5))
    loss = build_loss("focal")
    with pytest.raises(InputMisuseError, match="softmax"):
        detect_misuse(loss, probs, labels)
    assert loss.mode == "multiclass"
