"""Misuse table: every wrong input, option or name gives a clear error or documented behaviour.

Each row is one way to hold lossplug wrong. A row either raises the documented error, whose
type is lossplug's, ``ValueError`` or ``TypeError`` (never a deep torch ``RuntimeError`` or
``IndexError``) and whose message names the loss or option and what was expected, or it has a
documented, finite result (never a silent NaN). Rows marked "mixin" go through a real
``LossPlugMixin`` in ``Trainer(fast_dev_run=1)``; the command-line rows run
``scripts/train.py`` in a subprocess.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import TRAIN, quiet_trainer
from torch import nn
from torch.utils.data import DataLoader

from lossplug import CompositeLoss, UnknownLossError, build_loss
from lossplug.config import ConfigError
from lossplug.input_checks import InputMisuseError, InputMisuseWarning
from lossplug.mixin import LossPlugMixin, build_criterion

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01}


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _labels(n, c, *spatial, seed=1):
    return torch.randint(0, c, (n, *spatial), generator=torch.Generator().manual_seed(seed))


# -- the mixin path ------------------------------------------------------------------------


class Probe(LossPlugMixin, pl.LightningModule):
    """A linear layer over the last input dim, class dim moved to 1, then ``head``."""

    def __init__(self, loss, head=None, check_inputs="first", features=4, outputs=3):
        super().__init__(loss=loss, optimizer=SGD, check_inputs=check_inputs)
        self.net = nn.Linear(features, outputs)
        self.head = head

    def forward(self, x):
        out = self.net(x).movedim(-1, 1)
        return out if self.head is None else self.head(out)


def fit(loss, x, y, **options):
    """One training and one validation batch of ``(x, y)``; the last training loss."""
    model = Probe(loss, **options)
    trainer = quiet_trainer(fast_dev_run=1)
    loader = DataLoader([(x, y)], batch_size=None)
    trainer.fit(model, loader, loader)
    return trainer.callback_metrics["train_step/loss"]


def softmax(z):
    return z.softmax(1)


def flat_dice(pred, target):
    """A user's Dice loss that flattens with ``reshape(N, C, -1)``, impossible for N = 0."""
    probs = pred.softmax(1).reshape(pred.shape[0], pred.shape[1], -1)
    target = target.reshape(probs.shape)
    return 1 - (2 * (probs * target).sum(-1) / (probs + target).sum(-1).clamp_min(1e-6)).mean()


def _images(n=2, size=4, seed=0):
    return _randn(n, size, size, 4, seed=seed)


# -- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Misuse:
    """A misuse and its documented outcome: an error whose message says ``says``, or ``value``.

    ``warns`` is a warning category the run must emit (its message saying ``says``) while it
    still finishes with a finite loss.
    """

    run: Callable[[], object]
    raises: type[Exception] | None = None
    says: tuple[str, ...] = ()
    value: float | None = None
    warns: type[Warning] | None = None


def _cross_entropy_reference_with_ignored():
    pred, target = _randn(6, 4), torch.tensor([0, -100, 3, 2, -100, 1])
    return build_loss("cross_entropy")(pred, target), F.cross_entropy(pred, target)


CE_IGNORED, CE_IGNORED_REFERENCE = _cross_entropy_reference_with_ignored()

MISUSES = {
    # shapes
    "mse: shapes differ (no broadcasting)": Misuse(
        lambda: build_loss("mse")(_randn(4, 3), _randn(4)),
        ValueError,
        ("mse", "same shape", "(4, 3)", "(4,)"),
    ),
    "cross_entropy: index target of the wrong shape": Misuse(
        lambda: build_loss("cross_entropy")(_randn(4, 3), torch.zeros(4, 1, dtype=torch.long)),
        ValueError,
        ("cross_entropy", "must have shape (4,)", "(4, 1)"),
    ),
    "cross_entropy: soft target of the wrong shape": Misuse(
        lambda: build_loss("cross_entropy")(_randn(4, 3), torch.full((4, 2), 0.5)),
        ValueError,
        ("cross_entropy", "same shape", "(4, 3)", "(4, 2)"),
    ),
    "triplet: embeddings not (B, D)": Misuse(
        lambda: build_loss("triplet")(_randn(4), _labels(4, 2)),
        ValueError,
        ("triplet", "'embeddings' must have shape (B, D)"),
    ),
    # dtypes
    "cross_entropy: integer logits": Misuse(
        lambda: build_loss("cross_entropy")(torch.ones(4, 3, dtype=torch.long), _labels(4, 3)),
        TypeError,
        ("cross_entropy", "'pred' must be a floating-point tensor of logits", "torch.int64"),
    ),
    "cross_entropy: boolean target": Misuse(
        lambda: build_loss("cross_entropy")(_randn(4, 2), torch.ones(4, dtype=torch.bool)),
        TypeError,
        ("cross_entropy", "must be an integer tensor", "torch.bool"),
    ),
    "bce: integer target": Misuse(
        lambda: build_loss("bce")(_randn(4), torch.ones(4, dtype=torch.long)),
        TypeError,
        ("bce", "'target' must be a floating-point tensor of binary targets"),
    ),
    "triplet: float labels": Misuse(
        lambda: build_loss("triplet")(_randn(4, 2), torch.zeros(4)),
        TypeError,
        ("triplet", "'labels' must be an integer tensor", "torch.float32"),
    ),
    # ranges of target values
    "cross_entropy: class index too large": Misuse(
        lambda: build_loss("cross_entropy")(_randn(4, 3), torch.tensor([0, 1, 3, 2])),
        ValueError,
        ("cross_entropy", "class index 3", "out of range for 3 classes", "[0, 2]"),
    ),
    "cross_entropy: negative class index that is not ignore_index": Misuse(
        lambda: build_loss("cross_entropy")(_randn(4, 3), torch.tensor([0, -1, 2, 2])),
        ValueError,
        ("cross_entropy", "class index -1", "ignore_index=-100"),
    ),
    "cross_entropy: ignore_index is allowed (torch's mean over kept targets)": Misuse(
        lambda: CE_IGNORED, value=CE_IGNORED_REFERENCE.item()
    ),
    "dice: class index out of range beside ignore_index=255": Misuse(
        lambda: build_loss("dice", ignore_index=255)(
            _randn(1, 3, 2, 2), torch.tensor([[[0, 255], [5, 1]]])
        ),
        ValueError,
        ("dice", "class index 5", "[0, 2]", "ignore_index=255"),
    ),
    "bce: target outside [0, 1]": Misuse(
        lambda: build_loss("bce")(_randn(4), torch.tensor([0.0, 1.0, 2.0, 1.0])),
        ValueError,
        ("bce", "'target' must hold binary targets in [0, 1]", "2.0"),
    ),
    "hinge: binary labels other than {0, 1} or {-1, 1}": Misuse(
        lambda: build_loss("hinge")(_randn(4), torch.tensor([0.0, 2.0, 1.0, 0.0])),
        ValueError,
        ("hinge", "{0, 1} or {-1, 1}", "2.0"),
    ),
    "kl_div: log-probabilities given as the target": Misuse(
        lambda: build_loss("kl_div")(_randn(4, 3).log_softmax(1), _randn(4, 3).log_softmax(1)),
        ValueError,
        ("kl_div", "'target' must hold probabilities", "log_target=True"),
    ),
    # probabilities vs logits, both ways
    "bce: logits given with input=probs": Misuse(
        lambda: build_loss("bce", input="probs")(_randn(4) * 3, torch.ones(4)),
        ValueError,
        ("bce", "'pred' must hold probabilities", "[0, 1]"),
    ),
    "mixin: softmax output given to cross_entropy": Misuse(
        lambda: fit("cross_entropy", _randn(8, 4), _labels(8, 3), head=softmax),
        InputMisuseError,
        ("cross_entropy (stage 'train')", "expects logits", "remove the softmax from your model"),
    ),
    "mixin: softmax output given to dice": Misuse(
        lambda: fit("dice", _images(), _labels(2, 3, 4, 4), head=softmax),
        InputMisuseError,
        ("dice (stage 'train')", "remove the softmax from your model, or set loss.input=probs"),
    ),
    "mixin: logits given to dice with input=probs": Misuse(
        lambda: fit(build_loss("dice", input="probs"), _images(), _labels(2, 3, 4, 4)),
        InputMisuseError,
        ("dice (stage 'train')", "expects probabilities", "or set loss.input=logits"),
    ),
    "mixin: softmax output given to kl_div": Misuse(
        lambda: fit("kl_div", _randn(8, 4), _randn(8, 3).softmax(1), head=softmax),
        InputMisuseError,
        ("kl_div (stage 'train')", "expects log-probabilities", "use log_softmax"),
    ),
    "mixin: logits given to kl_div": Misuse(
        lambda: fit("kl_div", _randn(8, 4) * 10, _randn(8, 3).softmax(1)),
        InputMisuseError,
        ("kl_div (stage 'train')", "expects log-probabilities (<= 0)", "apply log_softmax"),
    ),
    "mixin: softmax output given to dice + cross-entropy, each term named": Misuse(
        lambda: fit(
            CompositeLoss({"dice": build_loss("dice"), "ce": build_loss("cross_entropy")}),
            _images(),
            _labels(2, 3, 4, 4),
            head=softmax,
        ),
        InputMisuseError,
        ("composite term 'dice' (dice)", "loss.terms.dice.input=probs", "term 'ce'"),
    ),
    "mixin: sigmoid output given to bce warns and trains": Misuse(
        lambda: fit("bce", _randn(8, 4), (_randn(8, 3) > 0).float(), head=torch.sigmoid),
        says=("bce (stage 'train')", "remove the sigmoid from your model, or set loss.input=probs"),
        warns=InputMisuseWarning,
    ),
    "mixin: check_inputs=never trusts the data (the softmax goes unreported)": Misuse(
        lambda: math.isfinite(
            fit("cross_entropy", _randn(8, 4), _labels(8, 3), head=softmax, check_inputs="never")
        ),
        value=True,
    ),
    "mixin: class index out of range at the first batch": Misuse(
        lambda: fit("cross_entropy", _randn(4, 4), torch.tensor([0, 7, 1, 2])),
        ValueError,
        ("cross_entropy", "class index 7", "[0, 2]"),
    ),
    # empty batches, ignored targets, NaN
    "cross_entropy: empty batch gives 0": Misuse(
        lambda: build_loss("cross_entropy")(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)),
        value=0.0,
    ),
    "cross_entropy: every target ignored gives 0 (torch: NaN)": Misuse(
        lambda: build_loss("cross_entropy")(_randn(3, 4), torch.full((3,), -100)), value=0.0
    ),
    "focal: every target ignored gives 0": Misuse(
        lambda: build_loss("focal", ignore_index=-1)(_randn(4), torch.full((4,), -1.0)), value=0.0
    ),
    "dice: empty masks on empty predictions give 0 (absent classes score 1)": Misuse(
        lambda: build_loss("dice", mode="binary", input="probs")(
            torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
        ),
        value=0.0,
    ),
    "triplet: a batch without a valid triplet gives 0": Misuse(
        lambda: build_loss("triplet")(_randn(4, 2), torch.zeros(4, dtype=torch.long)), value=0.0
    ),
    "mixin: empty batch for a loss whose mean is NaN there (torch's mse_loss)": Misuse(
        lambda: fit(F.mse_loss, torch.zeros(0, 4), torch.zeros(0, 3)),
        InputMisuseError,
        ("mse_loss (stage 'train')", "an empty batch", "gives a loss of nan", "leave empty"),
    ),
    "mixin: empty batch for a loss that fails there": Misuse(
        lambda: fit(flat_dice, torch.zeros(0, 4, 4, 4), torch.zeros(0, 3, 4, 4)),
        InputMisuseError,
        ("flat_dice (stage 'train')", "cannot compute a loss on an empty batch", "reshape"),
    ),
    "mixin: NaN in the predictions": Misuse(
        lambda: fit("mse", torch.full((4, 4), float("nan")), _randn(4, 3)),
        InputMisuseError,
        ("mse (stage 'train')", "'pred' holds 12 NaN or infinite value(s)"),
    ),
    # options
    "focal: negative gamma": Misuse(
        lambda: build_loss("focal", gamma=-1.0),
        ValueError,
        ("focal", "'gamma'", "must be a finite number >= 0", "-1.0"),
    ),
    "huber: delta of 0": Misuse(
        lambda: build_loss("huber", delta=0.0), ValueError, ("huber", "'delta'", "> 0.0")
    ),
    "cross_entropy: label smoothing above 1": Misuse(
        lambda: build_loss("cross_entropy", label_smoothing=1.5),
        ValueError,
        ("cross_entropy", "'label_smoothing'", "<= 1.0", "1.5"),
    ),
    "cross_entropy: negative class weight": Misuse(
        lambda: build_loss("cross_entropy", weight=[1.0, -2.0]),
        ValueError,
        ("cross_entropy", "'weight'", "finite values >= 0"),
    ),
    "cross_entropy: a class weight per class": Misuse(
        lambda: build_loss("cross_entropy", weight=[1.0, 2.0])(_randn(4, 3), _labels(4, 3)),
        ValueError,
        ("cross_entropy", "'weight' must have one entry per class", "(3,)"),
    ),
    "focal: alpha of the wrong length": Misuse(
        lambda: build_loss("focal", mode="multiclass", alpha=[0.5, 0.5])(
            _randn(4, 3), _labels(4, 3)
        ),
        ValueError,
        ("focal", "'alpha'", "one value per class (3)", "got 2"),
    ),
    "kl_div: negative temperature": Misuse(
        lambda: build_loss("kl_div", temperature=-1.0),
        ValueError,
        ("kl_div", "'temperature'", "> 0.0"),
    ),
    "kl_div: dim out of range": Misuse(
        lambda: build_loss("kl_div", dim=2)(_randn(4, 3), _randn(4, 3).softmax(1)),
        ValueError,
        ("kl_div", "'dim'", "2 dimensions", "got 2"),
    ),
    "tversky: negative alpha": Misuse(
        lambda: build_loss("tversky", alpha=-0.5),
        ValueError,
        ("tversky", "'alpha'", ">= 0.0", "-0.5"),
    ),
    "contrastive: neg_margin below pos_margin": Misuse(
        lambda: build_loss("contrastive", pos_margin=1.0, neg_margin=0.5),
        ValueError,
        ("contrastive", "'neg_margin' must be >= 'pos_margin'"),
    ),
    "dice: include_background=False in binary mode": Misuse(
        lambda: build_loss("dice", mode="binary", include_background=False)(
            _randn(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
        ),
        ValueError,
        ("dice", "include_background=False", "binary mode has no background channel"),
    ),
    "mse: unknown reduction": Misuse(
        lambda: build_loss("mse", reduction="avg"),
        ValueError,
        ("mse", "'reduction'", "'mean', 'sum', 'none'", "'avg'"),
    ),
    "composite: negative term weight": Misuse(
        lambda: CompositeLoss({"dice": build_loss("dice")}, weights={"dice": -1.0}),
        ValueError,
        ("composite", "weights.dice", ">= 0"),
    ),
    # names
    "unknown loss name": Misuse(
        lambda: build_loss("crossentropy"),
        UnknownLossError,
        ("unknown loss 'crossentropy'", "Did you mean 'cross_entropy'?", "Available losses"),
    ),
    "loss config with a misspelt option": Misuse(
        lambda: build_criterion({"_target_": "lossplug.losses.FocalLoss", "gama": 3}),
        ConfigError,
        ("unknown option 'gama'", "FocalLoss", "Did you mean 'gamma'?"),
    ),
    "mixin: unknown check_inputs mode": Misuse(
        lambda: Probe("mse", check_inputs="sometimes"),
        ValueError,
        ("check_inputs", "'first', 'always', 'never'", "'sometimes'"),
    ),
}


def _outcome(misuse: Misuse) -> tuple[BaseException | None, object, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return None, misuse.run(), caught
        except Exception as error:  # the row says which type it must be
            return error, None, caught


@pytest.mark.parametrize("case", MISUSES, ids=list(MISUSES))
def test_misuse_gives_the_documented_error_or_behaviour(case):
    misuse = MISUSES[case]
    error, result, caught = _outcome(misuse)
    if misuse.raises is not None:
        assert error is not None, f"no error; the run gave {result!r}"
        assert isinstance(error, misuse.raises), f"{type(error).__name__}: {error}"
        assert isinstance(error, (ValueError, TypeError))  # never a deep torch error
        for fragment in misuse.says:
            assert fragment in str(error), f"{fragment!r} not in: {error}"
        return
    assert error is None, f"{type(error).__name__}: {error}"
    if misuse.warns is not None:
        messages = [str(w.message) for w in caught if issubclass(w.category, misuse.warns)]
        assert len(messages) >= 1
        assert all(fragment in messages[0] for fragment in misuse.says), messages
        assert math.isfinite(float(result))
        return
    value = result.item() if isinstance(result, torch.Tensor) else result
    assert value == pytest.approx(misuse.value, abs=1e-6)  # finite: NaN != anything


def test_the_table_has_at_least_25_rows_and_covers_each_kind():
    assert len(MISUSES) + len(COMMAND_LINE) >= 25
    mixin_rows = [case for case in MISUSES if case.startswith("mixin:")]
    assert len(mixin_rows) >= 5


# -- bad overrides on the command line -----------------------------------------------------

#: a tiny run, in case an override is (wrongly) accepted.
TINY = (
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_checkpointing=false",
    "test=false",
)

#: ``{case: (overrides, what the one line of the error says)}``; test_cli_errors.py runs the
#: other bad command lines.
COMMAND_LINE = {
    "misspelt loss option": (
        ("loss=focal", "loss.gama=3"),
        (
            "loss: unknown option 'gama' for lossplug.losses.FocalLoss. Did you mean 'gamma'?",
            "Valid options:",
        ),
    ),
    "unknown loss": (
        ("loss=nonexistent",),
        ("loss: no config named 'nonexistent'. Choose one", "cross_entropy", "focal"),
    ),
    "negative learning rate": (("optimizer.lr=-1",), ("'lr'", ">= 0")),
    "negative focal gamma": (
        ("loss=focal", "loss.gamma=-1"),
        ("focal: option 'gamma' must be a finite number >= 0.0, got -1",),
    ),
}


@pytest.fixture(scope="module")
def command_line_outputs(tmp_path_factory):
    """``{case: (stdout + stderr, return code)}``; the runs go side by side (mostly imports)."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    runs: dict[str, subprocess.Popen[str]] = {}
    for case, (overrides, _) in COMMAND_LINE.items():
        folder = tmp_path_factory.mktemp("bad_override")
        runs[case] = subprocess.Popen(
            [sys.executable, TRAIN, *overrides, *TINY, f"hydra.run.dir={folder / 'run'}"],
            cwd=folder,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        return {
            case: (run.communicate(timeout=300)[0], run.returncode) for case, run in runs.items()
        }
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()


@pytest.mark.parametrize("case", COMMAND_LINE, ids=list(COMMAND_LINE))
def test_a_bad_override_fails_with_a_message_and_no_traceback(case, command_line_outputs):
    output, returncode = command_line_outputs[case]
    assert returncode == 1, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    last_line = [line for line in output.splitlines() if line.strip()][-1]
    assert last_line.startswith("Error: "), output[-2000:]
    for fragment in COMMAND_LINE[case][1]:
        assert fragment in last_line, f"{fragment!r} not in: {output[-2000:]}"
