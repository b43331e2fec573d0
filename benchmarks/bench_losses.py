"""Benchmark lossplug's losses against the libraries people use, at the same options.

For every row — a loss, an input size and a peer (torch's built-in, MONAI, kornia,
pytorch-metric-learning, or the paper's formula written in torch where no library has the loss)
— the two implementations are first checked to agree (value and input gradients, to a
tolerance) on the very inputs that are then timed; a row that disagrees
is reported and not timed, and the script exits with status 1. Then both are timed, forward +
backward, in turn (median of repeated samples after warm-up; see :mod:`benchmarks.benchkit`),
and their peak memory measured. Ratios are lossplug / peer: below 1 lossplug is faster or leaner.

    python -m benchmarks.bench_losses              # full sizes, writes bench_results/ and the docs
    python -m benchmarks.bench_losses --quick      # tiny sizes, one repeat (CI smoke test)
    python -m benchmarks.bench_losses --compile    # also torch.compile'd times
    python -m benchmarks.bench_losses --losses dice focal --out /tmp/bench

A complete run (neither ``--quick`` nor ``--losses``) also writes the table and plot of
``docs/performance.md`` from its JSON output (:mod:`benchmarks.performance_page`).

The lossplug side is the module users build by name (``lossplug.build_loss(name, **options)``),
or the functional where there is no module (``triplet_margin``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import kornia
import kornia.losses
import monai
import monai.losses
import pytorch_metric_learning
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning.distances import LpDistance
from torch import Tensor, nn

import lossplug
from benchmarks.benchkit import (
    forward_backward,
    machine_info,
    paired_ratio,
    paired_ratio_quartiles,
    peak_memory,
    time_steps,
    write_results,
)
from benchmarks.performance_page import loss_table, title, write_page
from lossplug import functional as LF

#: Target time ratio for thin wrappers over a torch built-in, and against other libraries.
WRAPPER_TARGET = 1.05
PEER_TARGET = 1.0

LossFn = Callable[..., Tensor]
InputFactory = Callable[[torch.device], tuple[Tensor, ...]]


@dataclass(frozen=True)
class Sizes:
    """The input sizes of a run: classification, segmentation and embeddings.

    InfoNCE and SupCon take batches of ``embeddings``' dimension: InfoNCE two views of each
    sample (a label per sample), SupCon ``embeddings``' classes. PML's ``NTXentLoss`` holds a
    (positive pairs x negative pairs) matrix, 1024 x 1046528 values for 1024 two-view
    embeddings (4 GiB a copy, several alive): its largest batch here is 512.
    """

    classification: tuple[int, int]
    segmentation: tuple[tuple[int, int, int, int], ...]
    embeddings: tuple[int, int, int]  # batch, dimension, classes
    infonce_batches: tuple[int, ...]
    supcon_batches: tuple[int, ...]


FULL = Sizes(
    (256, 1000), ((8, 4, 128, 128), (2, 21, 256, 256)), (256, 128, 16), (256, 512), (256, 1024)
)
QUICK = Sizes((8, 10), ((2, 3, 8, 8), (1, 4, 8, 8)), (16, 8, 4), (16,), (16,))


@dataclass(frozen=True)
class Row:
    """One comparison: lossplug against one peer on one input size, at the same options."""

    loss: str
    size: str
    peer: str
    inputs: InputFactory
    ours: LossFn
    theirs: LossFn
    target: float
    convention: str = ""


# ------------------------------------------------------------------------------- inputs
def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _leaf(tensor: Tensor, device: torch.device) -> Tensor:
    return tensor.to(device).requires_grad_()


def regression_inputs(shape: tuple[int, ...]) -> InputFactory:
    def make(device: torch.device) -> tuple[Tensor, ...]:
        gen = _generator(0)
        pred = torch.randn(shape, generator=gen) * 2
        return _leaf(pred, device), torch.randn(shape, generator=gen).to(device)

    return make


def quantile_inputs(shape: tuple[int, ...], levels: int) -> InputFactory:
    """Predictions ``(*shape, levels)``, one column per quantile level, and targets ``shape``."""

    def make(device: torch.device) -> tuple[Tensor, ...]:
        gen = _generator(6)
        pred = torch.randn(*shape, levels, generator=gen) * 2
        return _leaf(pred, device), torch.randn(shape, generator=gen).to(device)

    return make


def class_inputs(shape: tuple[int, ...]) -> InputFactory:
    """Logits ``(N, C, *)`` and class indices ``(N, *)``; every class present in every sample."""

    def make(device: torch.device) -> tuple[Tensor, ...]:
        gen = _generator(1)
        logits = torch.randn(shape, generator=gen) * 2
        labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
        per_sample = labels.view(shape[0], -1)
        if per_sample.shape[1] >= shape[1]:
            per_sample[:, : shape[1]] = torch.arange(shape[1])
        return _leaf(logits, device), labels.to(device)

    return make


def binary_inputs(shape: tuple[int, ...]) -> InputFactory:
    def make(device: torch.device) -> tuple[Tensor, ...]:
        gen = _generator(2)
        logits = torch.randn(shape, generator=gen) * 2
        target = torch.randint(0, 2, shape, generator=gen).float()
        return _leaf(logits, device), target.to(device)

    return make


def distribution_inputs(shape: tuple[int, ...]) -> InputFactory:
    def make(device: torch.device) -> tuple[Tensor, ...]:
        gen = _generator(3)
        log_q = torch.randn(shape, generator=gen).log_softmax(1)
        p = torch.randn(shape, generator=gen).softmax(1)
        return _leaf(log_q, device), p.to(device)

    return make


def embedding_inputs(batch: int, dim: int, classes: int) -> InputFactory:
    """Embeddings scaled so that some pairs and triplets are active and some are not."""

    def make(device: torch.device) -> tuple[Tensor, ...]:
        gen = _generator(4)
        centres = torch.randn(classes, dim, generator=gen) * 0.6 / math.sqrt(dim)
        labels = torch.arange(batch) % classes
        labels = labels[torch.randperm(batch, generator=gen)]
        emb = centres[labels] + torch.randn(batch, dim, generator=gen) / math.sqrt(dim)
        return _leaf(emb, device), labels.to(device)

    return make


def triplet_inputs(batch: int, dim: int) -> InputFactory:
    def make(device: torch.device) -> tuple[Tensor, ...]:
        gen = _generator(5)
        return tuple(
            _leaf(torch.randn(batch, dim, generator=gen) / math.sqrt(dim), device) for _ in range(3)
        )

    return make


# --------------------------------------------------------------------------------- rows
def _size(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _with_channel(loss: nn.Module) -> LossFn:
    """MONAI takes class-index targets as ``(N, 1, *)``."""
    return lambda pred, labels: loss(pred, labels.unsqueeze(1))


def _scaled(fn: LossFn, factor: float) -> LossFn:
    return lambda *args: fn(*args) * factor


def regression_rows(sizes: Sizes) -> list[Row]:
    shape = sizes.classification
    pairs = [
        ("mse", {}, nn.MSELoss()),
        ("l1", {}, nn.L1Loss()),
        ("huber", {"delta": 1.5}, nn.HuberLoss(delta=1.5)),
        ("smooth_l1", {"beta": 0.5}, nn.SmoothL1Loss(beta=0.5)),
    ]
    rows = [
        Row(
            name,
            _size(shape),
            f"torch nn.{type(peer).__name__}",
            regression_inputs(shape),
            lossplug.build_loss(name, **options),
            peer,
            WRAPPER_TARGET,
        )
        for name, options, peer in pairs
    ]
    rows.append(
        Row(
            "charbonnier",
            _size(shape),
            "torch sqrt(r² + eps²)",
            regression_inputs(shape),
            lossplug.build_loss("charbonnier", eps=1e-3),
            _charbonnier_formula,
            PEER_TARGET,
            "eps=1e-3",
        )
    )
    rows.append(
        Row(
            "quantile",
            _size((*shape, len(QUANTILES))),
            "torch max(tau u, (tau - 1) u)",
            quantile_inputs(shape, len(QUANTILES)),
            lossplug.build_loss("quantile", quantiles=QUANTILES),
            _pinball_formula,
            PEER_TARGET,
            "quantiles 0.1, 0.5, 0.9; mean over items and levels",
        )
    )
    return rows


#: the quantile levels of the quantile loss's row
QUANTILES = (0.1, 0.5, 0.9)


def _pinball_formula(pred: Tensor, target: Tensor) -> Tensor:
    """The pinball loss as forecasting code writes it, for every level at once."""
    tau = torch.tensor(QUANTILES, device=pred.device)
    u = target.unsqueeze(-1) - pred
    return torch.maximum(tau * u, (tau - 1) * u).mean()


def _charbonnier_formula(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier's loss as image-restoration code writes it."""
    return torch.sqrt((pred - target) ** 2 + eps**2).mean()


def _poly1_formula(logits: Tensor, labels: Tensor, epsilon: float = 1.0) -> Tensor:
    """Poly-1 cross-entropy as Leng et al. write it: torch's cross-entropy + eps (1 - p_t)."""
    cross_entropy = F.cross_entropy(logits, labels, reduction="none")
    return (cross_entropy + epsilon * (1 - torch.exp(-cross_entropy))).mean()


def _timm_asymmetric(
    logits: Tensor, target: Tensor, gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8
) -> Tensor:
    """The forward of timm's ``AsymmetricLossMultiLabel`` (gamma_pos=0) over the element count."""
    xs_pos = torch.sigmoid(logits)
    xs_neg = (1 - xs_pos + clip).clamp(max=1)
    loss = target * torch.log(xs_pos.clamp(min=eps)) + (1 - target) * torch.log(
        xs_neg.clamp(min=eps)
    )
    pt = xs_pos * target + xs_neg * (1 - target)
    loss = loss * torch.pow(1 - pt, gamma_neg * (1 - target))
    return -loss.sum() / logits.numel()


def classification_rows(sizes: Sizes) -> list[Row]:
    shape = sizes.classification
    classes = shape[1]
    rows = [
        Row(
            "cross_entropy",
            _size(shape),
            "torch nn.CrossEntropyLoss",
            class_inputs(shape),
            lossplug.build_loss("cross_entropy"),
            nn.CrossEntropyLoss(),
            WRAPPER_TARGET,
        ),
        Row(
            "bce",
            _size(shape),
            "torch nn.BCEWithLogitsLoss",
            binary_inputs(shape),
            lossplug.build_loss("bce"),
            nn.BCEWithLogitsLoss(),
            WRAPPER_TARGET,
        ),
        Row(
            "kl_div",
            _size(shape),
            "torch nn.KLDivLoss",
            distribution_inputs(shape),
            lossplug.build_loss("kl_div"),
            nn.KLDivLoss(reduction="batchmean"),
            WRAPPER_TARGET,
            "torch reduction='batchmean'",
        ),
        Row(
            "hinge",
            _size(shape),
            "torch F.multi_margin_loss",
            class_inputs(shape),
            lossplug.build_loss("hinge", mode="multiclass"),
            _scaled(F.multi_margin_loss, classes),
            WRAPPER_TARGET,
            "torch's value x C",
        ),
    ]
    for shape_seg in sizes.segmentation:
        rows.append(
            Row(
                "cross_entropy",
                _size(shape_seg),
                "torch nn.CrossEntropyLoss",
                class_inputs(shape_seg),
                lossplug.build_loss("cross_entropy"),
                nn.CrossEntropyLoss(),
                WRAPPER_TARGET,
            )
        )
    rows += [
        Row(
            "poly1",
            _size(shape),
            "torch cross_entropy + eps (1 - p_t)",
            class_inputs(shape),
            lossplug.build_loss("poly1", mode="multiclass", epsilon=1.0),
            _poly1_formula,
            PEER_TARGET,
            "Poly-1 cross-entropy, epsilon=1",
        ),
        Row(
            "asymmetric",
            _size(shape),
            "timm AsymmetricLossMultiLabel (formula)",
            binary_inputs(shape),
            lossplug.build_loss("asymmetric"),
            _timm_asymmetric,
            PEER_TARGET,
            "gamma_pos=0, gamma_neg=4, clip=0.05; timm's sum / elements",
        ),
    ]
    batch, dim, _ = sizes.embeddings
    rows.append(
        Row(
            "triplet_margin",
            _size((batch, dim)),
            "torch nn.TripletMarginLoss",
            triplet_inputs(batch, dim),
            LF.triplet_margin,
            nn.TripletMarginLoss(margin=1.0, eps=0.0),
            WRAPPER_TARGET,
            "torch eps=0 (lossplug adds no eps)",
        )
    )
    return rows


def focal_rows(sizes: Sizes) -> list[Row]:
    rows = []
    for shape in (sizes.classification, *sizes.segmentation):
        ours = lossplug.build_loss("focal", mode="multiclass", gamma=2.0)
        classes = shape[1]
        rows += [
            Row(
                "focal",
                _size(shape),
                "kornia focal_loss",
                class_inputs(shape),
                ours,
                _scaled(kornia.losses.FocalLoss(alpha=None, gamma=2.0, reduction="mean"), classes),
                PEER_TARGET,
                "multiclass; kornia's mean x C (it divides by C too)",
            ),
            Row(
                "focal",
                _size(shape),
                "MONAI FocalLoss",
                class_inputs(shape),
                ours,
                _scaled(
                    _with_channel(monai.losses.FocalLoss(use_softmax=True, to_onehot_y=True)),
                    classes,
                ),
                PEER_TARGET,
                "multiclass; MONAI's mean x C (it divides by C too)",
            ),
        ]
    shape = sizes.segmentation[0]
    ours = lossplug.build_loss("focal", mode="binary", gamma=2.0, alpha=0.25)
    rows += [
        Row(
            "focal",
            _size(shape),
            "kornia binary_focal_loss_with_logits",
            binary_inputs(shape),
            ours,
            kornia.losses.BinaryFocalLossWithLogits(alpha=0.25, gamma=2.0, reduction="mean"),
            PEER_TARGET,
            "binary, alpha=0.25",
        ),
        Row(
            "focal",
            _size(shape),
            "MONAI FocalLoss",
            binary_inputs(shape),
            ours,
            monai.losses.FocalLoss(use_softmax=False, alpha=0.25, gamma=2.0),
            PEER_TARGET,
            "binary (sigmoid), alpha=0.25",
        ),
    ]
    return rows


def overlap_rows(sizes: Sizes) -> list[Row]:
    rows = []
    eps = 1e-8
    tversky = {"alpha": 0.3, "beta": 0.7}
    for shape in sizes.segmentation:
        inputs, size = class_inputs(shape), _size(shape)
        rows += [
            Row(
                "dice",
                size,
                "MONAI DiceLoss",
                inputs,
                lossplug.build_loss("dice"),
                _with_channel(monai.losses.DiceLoss(softmax=True, to_onehot_y=True)),
                PEER_TARGET,
                "softmax, one-hot target, smooth 1e-5",
            ),
            Row(
                "dice",
                size,
                "kornia dice_loss",
                inputs,
                lossplug.build_loss("dice", smooth_nr=0.0, smooth_dr=eps),
                kornia.losses.DiceLoss(average="macro", eps=eps),
                PEER_TARGET,
                "kornia average='macro' (all classes present); smooth_nr=0, smooth_dr=eps",
            ),
            Row(
                "tversky",
                size,
                "MONAI TverskyLoss",
                inputs,
                lossplug.build_loss("tversky", **tversky),
                _with_channel(monai.losses.TverskyLoss(softmax=True, to_onehot_y=True, **tversky)),
                PEER_TARGET,
                "alpha=0.3, beta=0.7, smooth 1e-5",
            ),
            Row(
                "tversky",
                size,
                "kornia tversky_loss",
                inputs,
                lossplug.build_loss("tversky", smooth_nr=0.0, smooth_dr=eps, **tversky),
                kornia.losses.TverskyLoss(eps=eps, **tversky),
                PEER_TARGET,
                "alpha=0.3, beta=0.7; smooth_nr=0, smooth_dr=eps",
            ),
            Row(
                "dice_ce",
                size,
                "MONAI DiceCELoss",
                inputs,
                lossplug.build_loss("dice_ce"),
                _with_channel(monai.losses.DiceCELoss(softmax=True, to_onehot_y=True)),
                PEER_TARGET,
                "DiceCELoss, as loss=dice_ce builds it: one softmax; weights 1 and 1",
            ),
            Row(
                "dice_ce_terms",
                size,
                "MONAI DiceCELoss",
                inputs,
                lossplug.CompositeLoss({"dice": "dice", "ce": "cross_entropy"}),
                _with_channel(monai.losses.DiceCELoss(softmax=True, to_onehot_y=True)),
                PEER_TARGET,
                "CompositeLoss of dice and cross_entropy terms, as loss=dice_ce_terms builds it",
            ),
            Row(
                "dice+cross_entropy",
                size,
                "MONAI DiceCELoss",
                inputs,
                _dice_plus_cross_entropy,
                _with_channel(monai.losses.DiceCELoss(softmax=True, to_onehot_y=True)),
                PEER_TARGET,
                "unfused: dice() + cross_entropy()",
            ),
            Row(
                "generalized_dice",
                size,
                "MONAI GeneralizedDiceLoss",
                inputs,
                lossplug.build_loss("generalized_dice"),
                _with_channel(monai.losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True)),
                PEER_TARGET,
                "w_type='square' (weight_type here), smooth 1e-5",
            ),
            Row(
                "lovasz_softmax",
                size,
                "kornia lovasz_softmax_loss",
                inputs,
                lossplug.build_loss("lovasz_softmax", per_image=True, classes="all"),
                kornia.losses.LovaszSoftmaxLoss(),
                PEER_TARGET,
                "kornia's conventions: per_image=True, classes='all' (every class present)",
            ),
        ]
        binary = (shape[0], 1, *shape[2:])
        rows.append(
            Row(
                "lovasz_hinge",
                _size(binary),
                "kornia lovasz_hinge_loss",
                binary_inputs(binary),
                lossplug.build_loss("lovasz_hinge"),
                _without_channel(kornia.losses.LovaszHingeLoss()),
                PEER_TARGET,
                "per_image=True (kornia's and the reference's default)",
            )
        )
    return rows


def _without_channel(loss: nn.Module) -> LossFn:
    """The binary target of ``(N, 1, H, W)`` logits as kornia takes it, ``(N, H, W)``."""
    return lambda pred, target: loss(pred, target.squeeze(1))


def _dice_plus_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return LF.dice(logits, labels) + LF.cross_entropy(logits, labels)


def metric_learning_rows(sizes: Sizes) -> list[Row]:
    batch, dim, classes = sizes.embeddings
    size = f"{batch}x{dim}, {classes} classes"
    inputs = embedding_inputs(batch, dim, classes)
    distance = LpDistance(normalize_embeddings=False)
    batch_hard_miner = pml_miners.BatchHardMiner(distance=distance)
    batch_hard_loss = pml_losses.TripletMarginLoss(margin=0.2, distance=distance)
    return [
        Row(
            "contrastive",
            size,
            "PML ContrastiveLoss",
            inputs,
            lossplug.build_loss("contrastive", neg_margin=1.0, squared=False),
            pml_losses.ContrastiveLoss(
                pos_margin=0.0,
                neg_margin=1.0,
                distance=distance,
                reducer=pml_reducers.MeanReducer(),
            ),
            PEER_TARGET,
            "unsquared hinges; PML MeanReducer",
        ),
        Row(
            "triplet",
            size,
            "PML TripletMarginLoss",
            inputs,
            lossplug.build_loss("triplet", margin=0.2, mining="all"),
            pml_losses.TripletMarginLoss(margin=0.2, triplets_per_anchor="all", distance=distance),
            PEER_TARGET,
            "all triplets, mean over active (PML AvgNonZeroReducer)",
        ),
        Row(
            "triplet",
            size,
            "PML TripletMarginLoss + BatchHardMiner",
            inputs,
            lossplug.build_loss("triplet", margin=0.2, mining="batch_hard"),
            lambda emb, labels: batch_hard_loss(emb, labels, batch_hard_miner(emb, labels)),
            PEER_TARGET,
            "batch-hard mining",
        ),
    ]


def temperature_rows(sizes: Sizes) -> list[Row]:
    """InfoNCE and SupCon against PML at each batch, with PML's default temperatures."""
    _, dim, classes = sizes.embeddings
    infonce = [
        Row(
            "infonce",
            f"{batch}x{dim}, two views",
            "PML NTXentLoss",
            embedding_inputs(batch, dim, batch // 2),
            lossplug.build_loss("infonce", temperature=0.07),
            pml_losses.NTXentLoss(temperature=0.07),
            PEER_TARGET,
            "cosine similarity; mean over positive pairs",
        )
        for batch in sizes.infonce_batches
    ]
    supcon = [
        Row(
            "supcon",
            f"{batch}x{dim}, {classes} classes",
            "PML SupConLoss",
            embedding_inputs(batch, dim, classes),
            lossplug.build_loss("supcon", temperature=0.1),
            pml_losses.SupConLoss(temperature=0.1),
            PEER_TARGET,
            "cosine similarity; mean over anchors (PML AvgNonZeroReducer)",
        )
        for batch in sizes.supcon_batches
    ]
    return infonce + supcon


def all_rows(sizes: Sizes) -> list[Row]:
    """Every comparison, in table order."""
    return [
        *regression_rows(sizes),
        *classification_rows(sizes),
        *focal_rows(sizes),
        *overlap_rows(sizes),
        *metric_learning_rows(sizes),
        *temperature_rows(sizes),
    ]


# ---------------------------------------------------------------------------- measuring
def disagreement(row: Row, inputs: tuple[Tensor, ...]) -> str | None:
    """Why lossplug and the peer disagree on ``inputs`` (value or gradients), or ``None``."""
    leaves = [tensor for tensor in inputs if tensor.requires_grad]
    ours, theirs = row.ours(*inputs), row.theirs(*inputs)
    if not torch.isfinite(ours).all():
        return f"lossplug's value is not finite: {ours}"
    grads_ours = torch.autograd.grad(ours, leaves)
    grads_theirs = torch.autograd.grad(theirs, leaves)
    try:
        torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-4, atol=1e-6)
    except AssertionError as error:
        return f"values differ: lossplug {ours.item():.8g}, peer {theirs.item():.8g}\n{error}"
    for ours_grad, theirs_grad in zip(grads_ours, grads_theirs, strict=True):
        scale = ours_grad.abs().max().item()
        try:
            torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-3, atol=1e-4 * scale)
        except AssertionError as error:
            return f"gradients differ\n{error}"
    return None


def measure(row: Row, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """Check agreement, then time and measure both implementations of a row."""
    inputs = row.inputs(device)
    result: dict[str, object] = {
        "loss": row.loss,
        "size": row.size,
        "peer": row.peer,
        "convention": row.convention,
        "target_time_ratio": row.target,
    }
    problem = disagreement(row, inputs)
    result["agreement"] = "ok" if problem is None else problem
    if problem is not None:
        return result
    steps = {
        "ours": forward_backward(row.ours, inputs),
        "peer": forward_backward(row.theirs, inputs),
    }
    timing = {
        "repeats": args.repeats,
        "warmup": args.warmup,
        "min_sample_s": args.min_sample_s,
        "budget_s": args.budget_s,
    }
    samples = time_steps(steps, device, **timing)
    memory = {name: peak_memory(step, device) for name, step in steps.items()}
    first, median, third = paired_ratio_quartiles(samples["ours"], samples["peer"])
    result.update(
        ours_s=statistics.median(samples["ours"]),
        peer_s=statistics.median(samples["peer"]),
        time_ratio=median,
        time_ratio_quartiles=[first, third],
        samples=len(samples["ours"]),
        ours_bytes=memory["ours"],
        peer_bytes=memory["peer"],
        memory_ratio=memory["ours"] / max(memory["peer"], 1),
    )
    result["time_target_met"] = result["time_ratio"] <= row.target
    result["memory_target_met"] = memory["ours"] <= memory["peer"]
    if args.compile:
        compiled = {
            "ours": forward_backward(torch.compile(row.ours, dynamic=False), inputs),
            "peer": forward_backward(torch.compile(row.theirs, dynamic=False), inputs),
        }
        samples = time_steps(compiled, device, **timing)
        result.update(
            compiled_ours_s=statistics.median(samples["ours"]),
            compiled_peer_s=statistics.median(samples["peer"]),
            compiled_time_ratio=paired_ratio(samples["ours"], samples["peer"]),
        )
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (CI)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd losses")
    parser.add_argument("--losses", nargs="+", metavar="NAME", help="only these losses")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--no-value-checks",
        action="store_true",
        help="run lossplug with its value checks off (lossplug.value_checks(False))",
    )
    parser.add_argument("--repeats", type=int, help="timed samples per implementation")
    parser.add_argument("--warmup", type=int, help="untimed calls first")
    parser.add_argument("--min-sample-s", type=float, help="shortest timed sample, in seconds")
    parser.add_argument("--budget-s", type=float, help="rough time limit per row, in seconds")
    args = parser.parse_args(argv)
    defaults = {"repeats": 1, "warmup": 1, "min_sample_s": 0.0} if args.quick else {}
    defaults = {"repeats": 401, "warmup": 3, "min_sample_s": 0.002, "budget_s": 8.0, **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = all_rows(QUICK if args.quick else FULL)
    if args.losses:
        unknown = set(args.losses) - {row.loss for row in rows}
        if unknown:
            raise SystemExit(
                f"unknown loss(es) {sorted(unknown)}; known: {sorted({r.loss for r in rows})}"
            )
        rows = [row for row in rows if row.loss in args.losses]
    results = []
    for row in rows:
        with lossplug.value_checks(not args.no_value_checks):
            result = measure(row, args, device)
        if result["agreement"] != "ok":
            print(
                f"{row.loss} {row.size} vs {row.peer}: DISAGREES, not timed: {result['agreement']}"
            )
        results.append(result)
        print(f"{row.loss:<15} {row.size:<22} {row.peer:<38} {_brief(result)}", flush=True)
    names = ("quick", "compile", "threads", "no_value_checks", "repeats", "warmup")
    names += ("min_sample_s", "budget_s")
    machine = machine_info(device) | {
        "monai": monai.__version__,
        "kornia": kornia.__version__,
        "pytorch_metric_learning": pytorch_metric_learning.__version__,
    }
    payload = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {name: getattr(args, name) for name in names},
        "rows": results,
    }
    write_results(args.out, "bench_losses", payload, title(payload), *loss_table(payload))
    if not (args.quick or args.losses):  # a complete run: the documentation's table and plot
        written = write_page(args.out / "bench_losses.json")
        print("written: " + ", ".join(map(str, written)))
    return 1 if any(result["agreement"] != "ok" for result in results) else 0


def _brief(result: dict[str, object]) -> str:
    if result["agreement"] != "ok":
        return "DISAGREES"
    return f"time x{result['time_ratio']:.2f}  memory x{result['memory_ratio']:.2f}"


if __name__ == "__main__":
    sys.exit(main())
