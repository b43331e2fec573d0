"""Input checks: when they run (first/always/never), and the misuses they find."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader

import lossplug
from lossplug import CompositeLoss, build_loss
from lossplug._validation import value_checks_apply
from lossplug.demo.training import build
from lossplug.input_checks import InputMisuseError, InputMisuseWarning, detect_misuse
from lossplug.input_checks.findings import MIN_VALUES_FOR_HEURISTICS, PROBABILITY_LOSSES
from lossplug.input_checks.schedule import InputChecks
from lossplug.losses import CrossEntropyLoss
from lossplug.mixin import LossPlugMixin

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _labels(n, c, *spatial, seed=1):
    return torch.randint(0, c, (n, *spatial), generator=torch.Generator().manual_seed(seed))


def findings(loss, pred, target, stage="train"):
    """``(error message or None, warning messages)`` of one call of detect_misuse."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            detect_misuse(loss, pred, target, stage)
        except InputMisuseError as error:
            return str(error), [str(w.message) for w in caught]
    return None, [str(w.message) for w in caught if issubclass(w.category, InputMisuseWarning)]


# -- when the checks run -------------------------------------------------------------------


def test_an_unknown_mode_names_the_option_and_the_modes():
    with pytest.raises(ValueError, match=r"check_inputs.*'first', 'always', 'never'.*'sometimes'"):
        InputChecks("sometimes")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("first", [True, False, False, True, False, True]),
        ("always", [True] * 6),
        ("never", [False] * 6),
    ],
)
def test_due_batches_per_mode_and_stage(mode, expected):
    checks = InputChecks(mode)
    stages = ["train", "train", "train", "val", "val", "test"]
    assert [checks.due(stage) for stage in stages] == expected


def test_the_block_turns_value_checks_on_for_the_first_batch_only():
    checks = InputChecks("first")
    loss, pred, target = CrossEntropyLoss(), _logits(4, 3), _labels(4, 3)
    seen = []
    for _ in range(2):
        with checks.batch("train", loss, pred, target):
            seen.append(value_checks_apply(None))
    assert seen == [True, False]
    assert value_checks_apply(None)  # restored after the block


def test_misuse_is_found_on_due_batches_only():
    probs = _logits(8, 3).softmax(1)
    target = _labels(8, 3)
    first = InputChecks("first")
    with pytest.raises(InputMisuseError), first.batch("train", CrossEntropyLoss(), probs, target):
        pass
    with first.batch("train", CrossEntropyLoss(), probs, target):  # second batch: trusted
        pass
    with pytest.raises(InputMisuseError), first.batch("val", CrossEntropyLoss(), probs, target):
        pass
    never = InputChecks("never")
    with never.batch("train", CrossEntropyLoss(), probs, target):
        pass


# -- what is found -------------------------------------------------------------------------

CORRECT_USES = {
    "cross_entropy": (build_loss("cross_entropy"), _logits(8, 5), _labels(8, 5)),
    "cross_entropy on log-probabilities (softmax-invariant)": (
        build_loss("cross_entropy"),
        _logits(8, 5).log_softmax(1),
        _labels(8, 5),
    ),
    "focal multiclass": (build_loss("focal", mode="multiclass"), _logits(8, 5), _labels(8, 5)),
    "focal binary": (build_loss("focal"), _logits(8, 4), (_logits(8, 4, seed=3) > 0).float()),
    "poly1 multiclass": (build_loss("poly1"), _logits(8, 5), _labels(8, 5)),
    "bce": (build_loss("bce"), _logits(8, 4), (_logits(8, 4, seed=3) > 0).float()),
    "asymmetric": (build_loss("asymmetric"), _logits(8, 4), (_logits(8, 4, seed=3) > 0).float()),
    "bce on probabilities": (
        build_loss("bce", input="probs"),
        _logits(8, 4).sigmoid(),
        (_logits(8, 4, seed=3) > 0).float(),
    ),
    "dice": (build_loss("dice"), _logits(2, 3, 4, 4), _labels(2, 3, 4, 4)),
    "dice on probabilities": (
        build_loss("dice", input="probs"),
        _logits(2, 3, 4, 4).softmax(1),
        _labels(2, 3, 4, 4),
    ),
    "tversky binary on probabilities": (
        build_loss("tversky", mode="binary", input="probs"),
        _logits(2, 1, 4, 4).sigmoid(),
        (_logits(2, 1, 4, 4, seed=3) > 0).float(),
    ),
    "kl_div": (build_loss("kl_div"), _logits(8, 5).log_softmax(1), _logits(8, 5).softmax(1)),
    "kl_div with a temperature on logits": (
        build_loss("kl_div", temperature=2.0),
        _logits(8, 5),
        _logits(8, 5, seed=4).softmax(1),
    ),
    "kl_div on the last dim": (
        build_loss("kl_div", dim=-1),
        _logits(2, 3, 5).log_softmax(-1),
        _logits(2, 3, 5).softmax(-1),
    ),
    "hinge": (build_loss("hinge"), _logits(16).sigmoid(), (_logits(16, seed=3) > 0).float()),
    "mse on values in [0, 1]": (build_loss("mse"), _logits(8, 4).sigmoid(), _logits(8, 4)),
    "triplet": (build_loss("triplet"), _logits(8, 4).softmax(1), _labels(8, 3)),
    "a zero-initialised head": (build_loss("cross_entropy"), torch.zeros(8, 5), _labels(8, 5)),
    "a tiny batch in [0, 1]": (
        build_loss("bce"),
        torch.rand(MIN_VALUES_FOR_HEURISTICS - 1),
        torch.ones(MIN_VALUES_FOR_HEURISTICS - 1),
    ),
}


@pytest.mark.parametrize("case", CORRECT_USES, ids=list(CORRECT_USES))
def test_correct_inputs_give_no_finding(case):
    loss, pred, target = CORRECT_USES[case]
    assert findings(loss, pred, target) == (None, [])
    loss(pred, target)  # and the loss takes them


def test_random_logits_never_look_like_probabilities():
    for seed in range(20):
        for loss in (build_loss("cross_entropy"), build_loss("focal"), build_loss("bce")):
            pred = _logits(4, 4, seed=seed)
            target = _labels(4, 4) if loss.name == "cross_entropy" else (pred > 0).float()
            assert findings(loss, pred, target) == (None, [])


def test_a_softmax_output_given_to_cross_entropy_is_an_error_naming_the_fix():
    error, _ = findings(build_loss("cross_entropy"), _logits(8, 5).softmax(1), _labels(8, 5))
    assert error.startswith("cross_entropy (stage 'train'): expects logits")
    assert "every row sums to 1 along dim 1" in error
    assert "remove the softmax from your model" in error
    assert "loss.input" not in error  # cross_entropy has no input option
    for name in PROBABILITY_LOSSES:  # ... so the message says which losses take probabilities
        assert name in error


@pytest.mark.parametrize("name", ["dice", "tversky"])
def test_a_softmax_output_given_to_an_overlap_loss_suggests_input_probs(name):
    error, _ = findings(build_loss(name), _logits(2, 3, 4, 4).softmax(1), _labels(2, 3, 4, 4))
    assert error.startswith(f"{name} (stage 'train'): expects logits")
    assert error.endswith("remove the softmax from your model, or set loss.input=probs")


def test_a_softmax_output_in_bfloat16_is_recognised():
    probs = _logits(8, 10).softmax(1).bfloat16()
    error, _ = findings(build_loss("cross_entropy"), probs, _labels(8, 10))
    assert "expects logits" in error


def test_a_softmax_over_the_wrong_dim_is_only_a_warning():
    probs = _logits(6, 5).softmax(0)
    error, warned = findings(build_loss("cross_entropy"), probs, _labels(6, 5))
    assert error is None
    assert len(warned) == 1
    assert "every value of 'pred' is in [0, 1]" in warned[0]


def test_sigmoid_outputs_given_to_bce_are_a_warning_suggesting_input_probs():
    pred = _logits(8, 4).sigmoid()
    error, warned = findings(build_loss("bce"), pred, (pred > 0.5).float(), stage="val")
    assert error is None
    assert warned == [
        "bce (stage 'val'): expects logits, but every value of 'pred' is in [0, 1] "
        f"(min {pred.min():.4g}, max {pred.max():.4g}): it looks like probabilities. "
        "Fix: remove the sigmoid from your model, or set loss.input=probs"
    ]


def test_sigmoid_outputs_given_to_binary_focal_say_focal_takes_logits():
    pred = _logits(8, 4).sigmoid()
    _, warned = findings(build_loss("focal"), pred, (pred > 0.5).float())
    assert "remove the sigmoid from your model: focal takes logits" in warned[0]


@pytest.mark.parametrize(
    ("loss", "pred", "squash"),
    [
        (build_loss("dice", input="probs"), _logits(2, 3, 4, 4), "a softmax over dim 1"),
        (build_loss("bce", input="probs"), _logits(8, 4), "a sigmoid"),
        (
            build_loss("tversky", mode="multilabel", input="probs"),
            _logits(2, 3, 4, 4),
            "a sigmoid",
        ),
    ],
)
def test_logits_given_to_a_probabilities_loss_are_an_error(loss, pred, squash):
    target = (pred > 0).float() if loss.class_dim is None else _labels(2, 3, 4, 4)
    error, _ = findings(loss, pred, target)
    assert f"{loss.name} (stage 'train'): expects probabilities" in error
    assert f"outside [0, 1] (min {pred.min():.4g}, max {pred.max():.4g})" in error
    assert error.endswith(f"apply {squash} in your model, or set loss.input=logits")


def test_unnormalised_probabilities_for_multiclass_dice_are_a_warning():
    pred = _logits(2, 3, 4, 4).sigmoid()
    error, warned = findings(build_loss("dice", input="probs"), pred, _labels(2, 3, 4, 4))
    expected = (pred.sum(1) - 1).abs().max().item()
    assert error is None
    assert f"sum to values up to {expected:.3g} away from 1" in warned[0]


def test_probabilities_given_to_kl_div_are_an_error():
    probs = _logits(8, 5).softmax(1)
    error, _ = findings(build_loss("kl_div"), probs, probs)
    assert "kl_div (stage 'train'): expects log-probabilities" in error
    assert "use log_softmax instead of softmax" in error


def test_probabilities_given_to_kl_div_with_a_temperature_are_an_error_too():
    probs = _logits(8, 5).softmax(1)
    error, _ = findings(build_loss("kl_div", temperature=4.0), probs, probs)
    assert "use log_softmax instead of softmax" in error


def test_logits_given_to_kl_div_are_an_error():
    pred = _logits(8, 5)
    error, _ = findings(build_loss("kl_div"), pred, pred.softmax(1))
    assert f"expects log-probabilities (<= 0), but 'pred' holds values up to {pred.max():.4g}" in (
        error
    )
    assert error.endswith("apply log_softmax to the model's output")


def test_unnormalised_log_probabilities_for_kl_div_are_a_warning():
    pred = -_logits(8, 5).abs()  # <= 0, but not a log_softmax
    error, warned = findings(build_loss("kl_div"), pred, pred.softmax(1))
    assert error is None
    assert "exp('pred') does not sum to 1 along dim 1" in warned[0]


def test_each_composite_term_is_checked_with_its_own_input_space():
    loss = CompositeLoss({"dice": build_loss("dice"), "ce": build_loss("cross_entropy")})
    error, _ = findings(loss, _logits(2, 3, 4, 4).softmax(1), _labels(2, 3, 4, 4))
    first, second = error.split("\n")
    assert first.startswith("composite term 'dice' (dice) (stage 'train'): expects logits")
    assert first.endswith("or set loss.terms.dice.input=probs")
    assert second.startswith("composite term 'ce' (cross_entropy) (stage 'train'): expects logits")


def test_a_values_term_beside_a_logits_term_is_not_reported():
    loss = CompositeLoss({"mse": build_loss("mse"), "bce": build_loss("bce")})
    pred = _logits(8, 4).sigmoid()
    _, warned = findings(loss, pred, (pred > 0.5).float())
    assert len(warned) == 1
    assert warned[0].startswith("composite term 'bce' (bce)")


def test_nested_composites_name_the_path_to_the_term():
    inner = CompositeLoss({"dice": build_loss("dice")})
    loss = CompositeLoss({"seg": inner, "ce": build_loss("cross_entropy")})
    error, _ = findings(loss, _logits(2, 3, 4, 4).softmax(1), _labels(2, 3, 4, 4))
    assert "composite term 'seg' (composite) term 'dice' (dice)" in error
    assert "loss.terms.seg.terms.dice.input=probs" in error


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_prediction_is_an_error_naming_loss_and_stage(bad):
    pred = _logits(8, 5)
    pred[2, 3] = bad
    error, _ = findings(build_loss("cross_entropy"), pred, _labels(8, 5), stage="test")
    assert error.startswith(
        "cross_entropy (stage 'test'): 'pred' holds 1 NaN or infinite value(s) among its 40"
    )


def test_a_non_finite_target_is_an_error():
    target = _logits(8, 2)
    target[0, 0] = float("nan")
    error, _ = findings(build_loss("huber"), _logits(8, 2), target)
    assert error.startswith("huber (stage 'train'): 'target' holds 1 NaN or infinite value(s)")


def test_non_finite_values_are_reported_before_any_other_finding():
    probs = _logits(8, 5).softmax(1)
    probs[0, 0] = float("nan")
    error, _ = findings(build_loss("cross_entropy"), probs, _labels(8, 5))
    assert "NaN" in error
    assert "expects logits" not in error


def test_an_empty_batch_is_fine_for_a_loss_that_gives_zero():
    pred, target = torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)
    assert findings(build_loss("cross_entropy"), pred, target) == (None, [])
    assert build_loss("cross_entropy")(pred, target).item() == 0.0


def test_an_empty_batch_is_an_error_for_a_loss_that_gives_nan():
    loss = build_loss(F.mse_loss)  # torch's mean over no element: NaN
    error, _ = findings(loss, torch.zeros(0, 3), torch.zeros(0, 3))
    assert error.startswith(
        "mse_loss (stage 'train'): an empty batch ('pred' of shape (0, 3)) gives a loss of nan"
    )
    assert "leave empty batches out" in error


def flatten_classes(pred, target):
    """A user's loss that flattens with ``reshape(N, C, -1)``, impossible for N = 0."""
    return (pred.reshape(pred.shape[0], pred.shape[1], -1) - target).square().mean()


def test_an_empty_batch_a_loss_fails_on_is_an_error_chained_to_the_failure():
    loss = build_loss(flatten_classes)
    empty = torch.zeros(0, 3, 2, 2)
    with pytest.raises(InputMisuseError, match=r"^flatten_classes: cannot compute a loss") as info:
        detect_misuse(loss, empty, empty.reshape(0, 3, 4))
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("loss", "pred", "target"),
    [
        (build_loss("cross_entropy"), torch.rand(5), _labels(5, 3)),  # no class dim
        (build_loss("kl_div", dim=3), torch.rand(4, 3), torch.rand(4, 3)),  # dim out of range
        (build_loss("cross_entropy"), torch.ones(4, 3, dtype=torch.long), _labels(4, 3)),
        (build_loss("mse"), [0.5, 0.5], torch.zeros(2)),  # not a tensor
    ],
)
def test_shapes_and_types_the_loss_refuses_are_left_to_its_own_checks(loss, pred, target):
    assert findings(loss, pred, target) == (None, [])
    with pytest.raises((ValueError, TypeError), match=loss.name):
        loss(pred, target)


def test_a_single_class_is_not_taken_for_a_softmax():
    pred = torch.ones(20, 1)  # a softmax over one class: all ones, also what one logit can be
    error, warned = findings(build_loss("cross_entropy"), pred, torch.zeros(20, dtype=torch.long))
    assert error is None
    assert len(warned) == 1  # only the heuristic: every value in [0, 1]


def test_probability_losses_are_the_registered_losses_with_an_input_option():
    taking_probs = []
    for name in lossplug.available_losses():
        if name == "composite":
            continue
        try:
            build_loss(name, input="probs")
        except TypeError:
            continue
        taking_probs.append(name)
    assert tuple(taking_probs) == PROBABILITY_LOSSES


@pytest.mark.parametrize(
    ("loss", "class_dim"),
    [
        (build_loss("cross_entropy"), 1),
        (build_loss("bce"), None),
        (build_loss("kl_div", dim=-1), -1),
        (build_loss("focal", mode="multiclass"), 1),
        (build_loss("focal", mode="multilabel"), None),
        (build_loss("dice"), 1),
        (build_loss("tversky", mode="binary"), None),
    ],
)
def test_losses_declare_their_class_dim(loss, class_dim):
    assert loss.class_dim == class_dim


# -- through the mixin ---------------------------------------------------------------------


class SoftmaxWhenEvaluating(LossPlugMixin, pl.LightningModule):
    """Logits in training, probabilities in evaluation: the bug shows at validation only."""

    def __init__(self):
        super().__init__(loss="cross_entropy", optimizer=SGD)
        self.net = nn.Linear(4, 3)

    def forward(self, x):
        logits = self.net(x)
        return logits if self.training else logits.softmax(1)


def test_the_first_batch_of_each_stage_is_checked_in_a_run():
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 4, generator=generator), _labels(8, 3)) for _ in range(2)]
    trainer = quiet_trainer()
    loader = DataLoader(batches, batch_size=None)
    with pytest.raises(InputMisuseError, match=r"^cross_entropy \(stage 'val'\): expects logits"):
        trainer.fit(SoftmaxWhenEvaluating(), loader, loader)
    assert trainer.global_step == 2  # both training batches ran before validation


DEMO_RUNS = [
    ("classification", "cross_entropy"),
    ("classification", "focal"),
    ("classification", "poly1"),
    ("classification", "asymmetric"),
    ("classification", "bce"),
    ("classification", "kl_div"),
    ("segmentation", "dice_ce"),
    ("segmentation", "dice"),
    ("segmentation", "tversky"),
    ("segmentation", "focal"),
    ("segmentation", "bce"),
]


@pytest.mark.parametrize(("experiment", "loss"), DEMO_RUNS)
def test_the_demo_tasks_give_their_losses_what_they_expect(compose_train, experiment, loss):
    job = build(compose_train(f"experiment={experiment}", f"loss={loss}"))
    job.datamodule.setup("fit")
    inputs, target = job.model.split_batch(next(iter(job.datamodule.train_dataloader())))
    pred, loss_target = job.model.loss_inputs(job.model(inputs), target)
    assert findings(job.model.criterion, pred, loss_target) == (None, [])


def test_routed_composite_terms_are_checked_on_their_own_part_of_the_output():
    loss = CompositeLoss(
        {"dice": build_loss("dice", input="probs"), "ce": build_loss("cross_entropy")},
        inputs={"dice": {"pred": "seg", "activation": "softmax"}, "ce": {"pred": "seg"}},
    )
    logits, target = _logits(2, 3, 4, 4), _labels(2, 3, 4, 4)
    assert findings(loss, {"seg": logits}, target) == (None, [])  # dice gets the softmax
    error, _ = findings(loss, {"seg": logits.softmax(1)}, target)
    assert "composite term 'ce' (cross_entropy) (stage 'train'): expects logits" in error
    assert "term 'dice'" not in error  # softmax(softmax(z)) still sums to 1: not a finding
