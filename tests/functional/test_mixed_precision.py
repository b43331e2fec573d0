"""Mixed precision: every loss of the catalogue computes 16-bit inputs in float32.

Stated tolerances (also in the functional docstrings and the README):

- the loss of float16/bfloat16 inputs, with or without autocast, and of float32 inputs under
  autocast, is float32 and equals the float32 loss of the same (rounded) values to float32
  rounding: ``rtol=1e-5, atol=1e-6``;
- its gradient is the float32 gradient rounded to the input's dtype (``assert_close``'s
  defaults for that dtype: bfloat16 ``rtol=1.6e-2``, float16 ``rtol=1e-3``, ``atol=1e-5``);
- everything is finite at large shapes (segmentation ``2 x 21 x 256 x 256``) and extreme
  logits (scale 100 and 1e4).

The reference is the same loss on the float32 copy of the 16-bit input, with autocast off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig
from torch import Tensor

from lossplug._precision import at_least_float32
from lossplug.composite import CompositeLoss
from lossplug.demo.training import build
from lossplug.losses.base import LossModule
from lossplug.registry import build_loss

LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6
HALF_DTYPES = (torch.bfloat16, torch.float16)
SCALES = (3.0, 100.0, 1e4)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]

Inputs = Callable[[float, torch.Generator], tuple[Tensor, Tensor]]


def _segmentation(channels: int, size: int, binary: bool = False) -> Inputs:
    """Logits ``(2, C, size, size)`` times ``scale``; class indices, or {0, 1} labels."""

    def make(scale: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        logits = torch.randn(2, channels, size, size, generator=generator) * scale
        if binary:
            return logits, torch.randint(0, 2, logits.shape, generator=generator).float()
        return logits, torch.randint(0, channels, (2, size, size), generator=generator)

    return make


def _rows(features: int, classes: int, transform: Callable[[Tensor], Tensor] = lambda z: z):
    """``(64, features)`` scores times ``scale`` (then ``transform``); class indices."""

    def make(scale: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        scores = transform(torch.randn(64, features, generator=generator) * scale)
        return scores, torch.randint(0, classes, (64,), generator=generator)

    return make


def _binary_rows(scale: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    scores = torch.randn(64, 1, generator=generator) * scale
    return scores, torch.randint(0, 2, scores.shape, generator=generator).float()


def _regression(scale: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    pred = torch.randn(256, 8, generator=generator) * scale
    return pred, torch.randn(256, 8, generator=generator)


def _quantiles(scale: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Three columns (one per quantile level) for each of 256 x 8 targets."""
    pred = torch.randn(256, 8, 3, generator=generator) * scale
    return pred, torch.randn(256, 8, generator=generator)


def _soft_target(make: Inputs) -> Inputs:
    """``make``'s scores, with a softmax target of random scores instead of its labels."""

    def soft(scale: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        scores, _ = make(scale, generator)
        return scores, torch.randn(scores.shape, generator=generator).softmax(1)

    return soft


def _sigmoid(make: Inputs) -> Inputs:
    """``make``'s logits turned into probabilities (in float32, before any rounding)."""

    def probs(scale: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        logits, target = make(scale, generator)
        return logits.sigmoid(), target

    return probs


@dataclass(frozen=True)
class Case:
    loss: Callable[[], Callable[[Tensor, Tensor], Tensor]]
    inputs: Inputs


def _built(name: str, **options: object) -> Callable[[], LossModule]:
    return lambda: build_loss(name, **options)


def _dice_ce_composite() -> CompositeLoss:
    return CompositeLoss({"dice": build_loss("dice"), "ce": build_loss("cross_entropy")})


SEGMENTATION = _segmentation(5, 32)
BINARY = _segmentation(1, 64, binary=True)
MULTILABEL = _segmentation(4, 32, binary=True)

CASES = {
    "cross_entropy": Case(_built("cross_entropy"), SEGMENTATION),
    "focal_multiclass": Case(_built("focal", mode="multiclass", gamma=2.0), SEGMENTATION),
    "dice": Case(_built("dice"), SEGMENTATION),
    "tversky": Case(_built("tversky", alpha=0.3, beta=0.7, gamma=0.75), SEGMENTATION),
    "generalized_dice": Case(_built("generalized_dice", ignore_index=0), SEGMENTATION),
    "lovasz_softmax": Case(_built("lovasz_softmax", ignore_index=0), SEGMENTATION),
    "lovasz_softmax_per_image_all": Case(
        _built("lovasz_softmax", per_image=True, classes="all"), SEGMENTATION
    ),
    "lovasz_hinge": Case(_built("lovasz_hinge"), BINARY),
    "generalized_dice_binary_batch": Case(
        _built("generalized_dice", mode="binary", batch=True, weight_type="simple"), BINARY
    ),
    "dice_ce": Case(_dice_ce_composite, SEGMENTATION),
    "dice_ce_one_softmax": Case(_built("dice_ce"), SEGMENTATION),
    "cross_entropy_ignore_smooth": Case(
        _built("cross_entropy", ignore_index=0, label_smoothing=0.1, weight=[1.0] * 5),
        SEGMENTATION,
    ),
    "cross_entropy_soft_target": Case(_built("cross_entropy"), _soft_target(SEGMENTATION)),
    "focal_multiclass_ignore": Case(
        _built("focal", mode="multiclass", gamma=0.5, ignore_index=0), SEGMENTATION
    ),
    "dice_ignore": Case(_built("dice", ignore_index=0, batch=True), SEGMENTATION),
    "dice_jaccard_weighted": Case(
        _built("dice", jaccard=True, include_background=False, weight=[1, 2, 3, 4, 5]),
        SEGMENTATION,
    ),
    "focal_binary": Case(_built("focal", mode="binary", gamma=0.5, alpha=0.25), BINARY),
    "focal_multilabel": Case(_built("focal", mode="multilabel"), MULTILABEL),
    "bce": Case(_built("bce", pos_weight=[2.0]), BINARY),
    "bce_probs": Case(_built("bce", input="probs"), _sigmoid(BINARY)),
    "dice_binary": Case(_built("dice", mode="binary"), BINARY),
    "dice_multilabel_probs": Case(
        _built("dice", mode="multilabel", input="probs"), _sigmoid(MULTILABEL)
    ),
    "tversky_binary": Case(_built("tversky", mode="binary", alpha=0.7, beta=0.3), BINARY),
    "kl_div": Case(_built("kl_div"), _soft_target(_rows(10, 10, lambda z: z.log_softmax(1)))),
    "kl_div_temperature": Case(
        _built("kl_div", temperature=2.0), _soft_target(_rows(10, 10, lambda z: z.log_softmax(1)))
    ),
    "hinge_multiclass": Case(_built("hinge", mode="multiclass", squared=True), _rows(10, 10)),
    "hinge_binary": Case(_built("hinge"), _binary_rows),
    "mse": Case(_built("mse"), _regression),
    "l1": Case(_built("l1"), _regression),
    "huber": Case(_built("huber", delta=0.5), _regression),
    "smooth_l1": Case(_built("smooth_l1", beta=0.5), _regression),
    "charbonnier": Case(_built("charbonnier", subtract_eps=True), _regression),
    "quantile": Case(_built("quantile", quantiles=[0.1, 0.5, 0.9]), _quantiles),
    "poly1_multiclass": Case(_built("poly1", mode="multiclass", gamma=0.5), SEGMENTATION),
    "poly1_multilabel": Case(
        _built("poly1", mode="multilabel", epsilon=-1.0, gamma=2.0), MULTILABEL
    ),
    "asymmetric": Case(_built("asymmetric", gamma_pos=1.0), MULTILABEL),
    "triplet": Case(_built("triplet"), _rows(32, 8)),
    "triplet_batch_hard_cosine": Case(
        _built("triplet", mining="batch_hard", distance="cosine"), _rows(32, 8)
    ),
    "contrastive": Case(_built("contrastive"), _rows(32, 8)),
    "infonce": Case(_built("infonce"), _rows(32, 8)),
    "supcon": Case(_built("supcon"), _rows(32, 8)),
}

#: the segmentation losses again at a realistic size, 2 x 21 x 256 x 256: long sums (a
#: float16 sum overflows above 65504) at ordinary logits; extremes are tested above.
LARGE = _segmentation(21, 256)
LARGE_CASES = {
    f"{name}_2x21x256x256": Case(CASES[name].loss, LARGE)
    for name in (
        *("cross_entropy", "focal_multiclass", "dice", "tversky", "generalized_dice"),
        "lovasz_softmax",
    )
}
RUNS = [
    *(
        pytest.param(case, scale, id=f"{name}-{scale:g}")
        for name, case in CASES.items()
        for scale in SCALES
    ),
    *(pytest.param(case, 3.0, id=f"{name}-3") for name, case in LARGE_CASES.items()),
]

#: the names users type (DESIGN.md); each must have a case here.
CATALOGUE = (
    *("mse", "l1", "huber", "smooth_l1", "charbonnier", "quantile"),
    *("cross_entropy", "bce", "kl_div"),
    *("hinge", "focal", "poly1", "asymmetric"),
    *("dice", "tversky", "triplet", "contrastive", "infonce", "supcon", "dice_ce"),
    *("generalized_dice", "lovasz_softmax", "lovasz_hinge"),
)


def test_every_loss_of_the_catalogue_has_a_case():
    assert all(any(case.startswith(name) for case in CASES) for name in CATALOGUE)


def _inputs(case: Case, dtype: torch.dtype, scale: float, device: str) -> tuple[Tensor, Tensor]:
    """The case's prediction rounded to ``dtype``; a float target rounded too (the model's)."""
    pred, target = case.inputs(scale, torch.Generator().manual_seed(0))
    if target.is_floating_point():
        target = target.to(dtype)
    return pred.to(device=device, dtype=dtype), target.to(device)


def _value_and_grad(
    loss: Callable[[Tensor, Tensor], Tensor],
    pred: Tensor,
    target: Tensor,
    autocast: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """The loss, under autocast to ``autocast`` if given, and its gradient in ``pred``.

    The backward pass runs outside autocast, as PyTorch recommends and Lightning does.
    """
    pred = pred.detach().requires_grad_(True)
    with torch.autocast(pred.device.type, dtype=autocast or torch.bfloat16, enabled=bool(autocast)):
        value = loss(pred, target)
    (grad,) = torch.autograd.grad(value, pred)
    return value, grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize(("case", "scale"), RUNS)
def test_half_inputs_and_autocast_match_float32(case, scale, dtype, device):
    loss = case.loss()
    if isinstance(loss, torch.nn.Module):
        loss = loss.to(device)
    pred, target = _inputs(case, dtype, scale, device)
    float_target = target.float() if target.is_floating_point() else target
    reference, reference_grad = _value_and_grad(loss, pred.float(), float_target)
    assert reference.dtype == torch.float32 and torch.isfinite(reference)

    def check(value: Tensor, grad: Tensor, grad_reference: Tensor) -> None:
        assert value.dtype == torch.float32
        assert torch.isfinite(value) and torch.isfinite(grad).all()
        torch.testing.assert_close(value, reference, rtol=LOSS_RTOL, atol=LOSS_ATOL)
        torch.testing.assert_close(grad, grad_reference)

    # the model's 16-bit output: from a half-precision model, or inside autocast (Lightning's
    # "bf16-mixed" and "16-mixed")
    for autocast in (None, dtype):
        value, grad = _value_and_grad(loss, pred, target, autocast)
        check(value, grad, reference_grad.to(dtype))
    # float32 inputs: autocast must not run any part of the loss in 16 bits
    value, grad = _value_and_grad(loss, pred.float(), float_target, dtype)
    check(value, grad, reference_grad)


def test_at_least_float32_upcasts_16_bit_and_leaves_the_rest_alone():
    for dtype in (torch.float32, torch.float64, torch.int64):
        tensor = torch.zeros(3, dtype=dtype)
        assert at_least_float32(tensor) is tensor  # no copy: the float32 path is unchanged
    for dtype in HALF_DTYPES:
        assert at_least_float32(torch.zeros(3, dtype=dtype)).dtype == torch.float32
    assert at_least_float32(None) is None


def _overflowing_dice() -> tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor]:
    """A binary mask of 256 x 256 = 65536 positives, all predicted: P + T = 131072."""
    return (
        build_loss("dice", mode="binary"),
        torch.full((1, 1, 256, 256), 20.0),
        torch.ones(1, 1, 256, 256),
    )


def _overflowing_mse() -> tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor]:
    """Residuals of 300: squares of 90000."""
    return build_loss("mse"), torch.full((4, 8), 300.0), torch.zeros(4, 8)


def _overflowing_cross_entropy() -> tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor]:
    """20000 positions whose target class is 8 below the others: a sum of about 1.6e5."""
    logits = torch.zeros(20000, 3)
    logits[:, 0] = -8.0
    return build_loss("cross_entropy"), logits, torch.zeros(20000, dtype=torch.long)


@pytest.mark.parametrize(
    ("make", "naive_sum"),
    [
        (_overflowing_dice, lambda pred, target: pred.sigmoid().sum() + target.sum()),
        (_overflowing_mse, lambda pred, target: (pred - target).square().sum()),
        (_overflowing_cross_entropy, lambda pred, target: -pred.log_softmax(1)[:, 0].sum()),
    ],
    ids=["dice", "mse", "cross_entropy"],
)
def test_float16_sums_beyond_its_range_stay_finite(make, naive_sum):
    loss, pred, target = make()
    half_target = target.half() if target.is_floating_point() else target
    assert torch.isinf(naive_sum(pred.half(), half_target))  # float16 itself overflows here
    value = loss(pred.half().requires_grad_(True), half_target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    torch.testing.assert_close(value, loss(pred, target), rtol=LOSS_RTOL, atol=LOSS_ATOL)


class _RecordTrainingLosses(Callback):
    """The dtype of the model's output, and every training step's loss and components."""

    def __init__(self) -> None:
        self.output_dtypes: set[torch.dtype] = set()
        self.losses: list[Tensor] = []

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.register_forward_hook(lambda *hook: self.output_dtypes.add(hook[-1].dtype))

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor):
        self.losses += [loss.detach(), *(c.detach() for c in pl_module.step_components.values())]


def _fit_and_record(cfg: DictConfig) -> tuple[_RecordTrainingLosses, dict[str, Tensor]]:
    job = build(cfg)
    recorder = _RecordTrainingLosses()
    job.trainer.callbacks.append(recorder)
    job.trainer.fit(job.model, datamodule=job.datamodule)
    return recorder, job.trainer.callback_metrics


def _float32_and_finite(values: list[Tensor]) -> bool:
    return bool(values) and all(v.dtype == torch.float32 and torch.isfinite(v) for v in values)


MIXED_RUNS = [
    ("loss=focal",),
    ("experiment=segmentation",),  # dice_ce
    ("experiment=segmentation", "loss=tversky"),
    ("experiment=metric_learning",),  # triplet
]


@pytest.mark.parametrize("overrides", MIXED_RUNS, ids=lambda o: " ".join(o))
def test_lightning_bf16_mixed_gives_float32_losses(compose_train, overrides):
    cfg = compose_train(*overrides, "trainer.precision=bf16-mixed", "+trainer.fast_dev_run=true")
    recorder, metrics = _fit_and_record(cfg)
    assert recorder.output_dtypes == {torch.bfloat16}  # autocast ran the model in bf16
    assert _float32_and_finite(recorder.losses)
    assert torch.isfinite(metrics["val/loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("overrides", MIXED_RUNS, ids=lambda o: " ".join(o))
def test_lightning_16_mixed_on_gpu_gives_float32_losses(compose_train, overrides):
    cfg = compose_train(
        *overrides, "trainer=gpu", "trainer.precision=16-mixed", "+trainer.fast_dev_run=true"
    )
    recorder, metrics = _fit_and_record(cfg)
    assert recorder.output_dtypes == {torch.float16}
    assert _float32_and_finite(recorder.losses)
    assert torch.isfinite(metrics["val/loss"])
