"""What LossPlugMixin's steps and component logging cost per step, against a hand-written module.

Both modules train the default experiment's model (``lossplug.demo.models.Classifier``'s digits MLP,
batch 64, AdamW with lossplug's parameter groups) on the same batches with the same loss, in a
real ``Trainer.fit`` with no validation and a TensorBoard logger in a temporary folder:

- **mixin**: ``lossplug.demo.models.Classifier``, whose :class:`~lossplug.LossPlugMixin` steps log
  the total and every component;
- **hand-written**: a ``LightningModule`` in the lightning-hydra-template style that computes
  ``criterion(pred, target)`` and logs only the total, through a torchmetrics ``MeanMetric``,
  per step and per epoch (``on_step=True, on_epoch=True``).

Each K runs at two logging intervals: ``log_every_n_steps=10`` (the demo trainer's default)
and ``1`` (every step's values written, the most logging costs).

The loss has K = 1, 4 or 16 components: cross-entropy, or a :class:`~lossplug.CompositeLoss` of
K cross-entropy terms weighted 1/K (the cheapest term, so logging weighs the most: a worst
case). A callback stamps ``time.perf_counter()`` at every training batch's and epoch's start:

- **step**: from one batch's start to the next one's, the last batch of an epoch left out:
  forward, loss, logging, backward, optimizer step, Lightning's per-step bookkeeping and
  fetching the next batch;
- **epoch / step**: from one epoch's start to the next (or the end of training) divided by its
  batches: the step plus the epoch-end reductions and logging.

The two modules' fits alternate (ABBA order), after one untimed warm-up fit each; a ratio is
mixin / hand-written, the median over repeats of the ratio of the two fits' medians.

    python -m benchmarks.bench_overhead          # writes bench_results/bench_overhead.{json,md}
    python -m benchmarks.bench_overhead --quick  # a smoke run: one short fit per module and K
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from benchmarks.benchkit import machine_info, paired_ratio, write_results
from lossplug import CompositeLoss
from lossplug.demo.data import DigitsDataModule
from lossplug.demo.models import MLP, Classifier
from lossplug.losses import CrossEntropyLoss, LossModule
from lossplug.optim import OptimizerSpec

COMPONENTS = (1, 4, 16)
#: the most the mixin may cost against the hand-written module, by logging interval.
TARGET_RATIO = {10: 1.0, 1: 1.05}
BATCH_SIZE = 64
HIDDEN = (256,)  # as conf/model/classifier.yaml
DROPOUT = 0.1
LEARNING_RATE = 0.003  # as conf/experiment/classification.yaml
LOG_EVERY_N_STEPS = (10, 1)  # 10 as conf/trainer/default.yaml
SEED = 0
CAPTURE: dict[str, Any] = {"capture_output": True, "text": True, "check": True}


@dataclass(frozen=True)
class Settings:
    """How much to measure: repeats (pairs of fits) per K, epochs and batches per fit."""

    repeats: int = 5
    epochs: int = 8
    batches_per_epoch: int | None = None  # None: the whole training split
    warmup: bool = True


QUICK = Settings(repeats=1, epochs=2, batches_per_epoch=4, warmup=False)


class HandWritten(pl.LightningModule):
    """The lightning-hydra-template pattern: the loss's total, logged through a ``MeanMetric``."""

    def __init__(
        self, criterion: nn.Module, optimizer: Callable[..., torch.optim.Optimizer]
    ) -> None:
        super().__init__()
        self.criterion = criterion
        self.backbone = MLP(DigitsDataModule.num_features, HIDDEN, DROPOUT)
        self.head = nn.Linear(self.backbone.out_features, DigitsDataModule.num_classes)
        self.train_loss = MeanMetric()
        self.optimizer = OptimizerSpec.parse(optimizer)

    def forward(self, inputs: Tensor) -> Tensor:
        """Class scores."""
        return self.head(self.backbone(inputs))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """The batch's loss; its epoch mean is logged as ``train/loss``."""
        inputs, target = batch
        loss = self.criterion(self(inputs), target)
        self.train_loss(loss)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The same optimizer and parameter groups as the mixin's."""
        return self.optimizer.build(self)


class StepTimer(pl.Callback):
    """Stamps ``time.perf_counter()`` at the start of every training batch and epoch."""

    def __init__(self) -> None:
        self.batch_starts: list[list[float]] = []
        self.epoch_starts: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Open an epoch."""
        self.epoch_starts.append(time.perf_counter())
        self.batch_starts.append([])

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Stamp a batch."""
        self.batch_starts[-1].append(time.perf_counter())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the last epoch (after its epoch-end logging)."""
        self.epoch_starts.append(time.perf_counter())

    def step_seconds(self) -> list[float]:
        """Time from each batch's start to the next batch's start in the same epoch."""
        return [
            later - earlier
            for starts in self.batch_starts
            for earlier, later in itertools.pairwise(starts)
        ]

    def epoch_seconds_per_step(self) -> list[float]:
        """Each epoch's time, epoch end included, divided by its batches."""
        return [
            (end - start) / len(starts)
            for (start, end), starts in zip(
                itertools.pairwise(self.epoch_starts), self.batch_starts, strict=True
            )
        ]


def build_loss(components: int) -> LossModule:
    """Cross-entropy, or a composite of ``components`` cross-entropy terms weighted 1/K."""
    if components == 1:
        return CrossEntropyLoss()
    names = [f"ce{index}" for index in range(components)]
    return CompositeLoss(
        {name: CrossEntropyLoss() for name in names},
        weights=dict.fromkeys(names, 1.0 / components),
    )


def build_module(kind: str, components: int) -> pl.LightningModule:
    """The ``"mixin"`` or ``"hand-written"`` module, seeded so both start from the same weights."""
    pl.seed_everything(SEED, verbose=False)
    optimizer = functools.partial(torch.optim.AdamW, lr=LEARNING_RATE)
    loss = build_loss(components)
    if kind == "mixin":
        return Classifier(loss=loss, optimizer=optimizer, hidden=HIDDEN, dropout=DROPOUT)
    return HandWritten(loss, optimizer)


def timed_fit(
    module: pl.LightningModule,
    loader: DataLoader,
    settings: Settings,
    log_dir: str,
    log_every_n_steps: int = LOG_EVERY_N_STEPS[0],
) -> StepTimer:
    """Fit ``module`` for ``settings.epochs`` epochs without validation, timing each step."""
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=settings.epochs,
        limit_train_batches=settings.batches_per_epoch,
        logger=TensorBoardLogger(log_dir, name="bench_overhead"),
        log_every_n_steps=log_every_n_steps,
        callbacks=[timer],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    pl.seed_everything(SEED, verbose=False)  # the same batches and dropout masks for both
    trainer.fit(module, train_dataloaders=loader)
    return timer


def measure(
    components: int, log_every_n_steps: int, settings: Settings, loader: DataLoader, log_dir: str
) -> dict[str, float | bool]:
    """Time both modules with a loss of ``components`` terms, alternating their fits.

    Each pair of fits must end with the same weights (the same computation was timed);
    ``same_weights`` says whether every pair did.
    """
    kinds = ("mixin", "hand-written")
    step: dict[str, list[float]] = {kind: [] for kind in kinds}
    epoch: dict[str, list[float]] = {kind: [] for kind in kinds}
    same_weights = True
    for repeat in range(settings.repeats):
        trained = {}
        for kind in kinds if repeat % 2 == 0 else kinds[::-1]:
            trained[kind] = build_module(kind, components)
            timer = timed_fit(trained[kind], loader, settings, log_dir, log_every_n_steps)
            step[kind].append(statistics.median(timer.step_seconds()))
            epoch[kind].append(statistics.median(timer.epoch_seconds_per_step()))
        same_weights &= all(
            torch.allclose(mixin, hand_written)
            for mixin, hand_written in zip(
                trained["mixin"].parameters(), trained["hand-written"].parameters(), strict=True
            )
        )
    return {
        "components": components,
        "log_every_n_steps": log_every_n_steps,
        "same_weights": same_weights,
        "mixin_step_ms": 1e3 * statistics.median(step["mixin"]),
        "handwritten_step_ms": 1e3 * statistics.median(step["hand-written"]),
        "step_ratio": paired_ratio(step["mixin"], step["hand-written"]),
        "mixin_epoch_ms_per_step": 1e3 * statistics.median(epoch["mixin"]),
        "handwritten_epoch_ms_per_step": 1e3 * statistics.median(epoch["hand-written"]),
        "epoch_ratio": paired_ratio(epoch["mixin"], epoch["hand-written"]),
    }


def table(rows: list[dict[str, float | bool]]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the results table."""
    header = [
        "components",
        "log every n steps",
        "mixin ms / step",
        "hand-written ms / step",
        "step ratio",
        "epoch ratio",
        "target met",
    ]
    body = [
        [
            str(row["components"]),
            str(row["log_every_n_steps"]),
            f"{row['mixin_step_ms']:.3f}",
            f"{row['handwritten_step_ms']:.3f}",
            f"{row['step_ratio']:.3f}",
            f"{row['epoch_ratio']:.3f}",
            _target_met(row),
        ]
        for row in rows
    ]
    return header, body


def _target_met(row: dict[str, float | bool]) -> str:
    """``"yes (<= 1.05)"`` where the step ratio meets its logging interval's target."""
    target = TARGET_RATIO[int(row["log_every_n_steps"])]
    return f"{'yes' if row['step_ratio'] <= target else 'no'} (<= {target})"


def source_version() -> str:
    """The working tree's git commit, ``+changes`` if ``lossplug/`` differs from it."""
    repo = Path(__file__).resolve().parents[1]
    git = ("git", "-C", str(repo))
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], **CAPTURE).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "lossplug"], **CAPTURE).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if changed.strip() else "")


def quiet_lightning() -> None:
    """Silence Lightning's banners and advice, printed again at every fit."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"lightning\.")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one short fit each")
    parser.add_argument("--repeats", type=int, help="pairs of fits per K (default 5)")
    parser.add_argument("--epochs", type=int, help="epochs per fit (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else Settings()
    settings = replace(
        settings, repeats=args.repeats or settings.repeats, epochs=args.epochs or settings.epochs
    )
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    quiet_lightning()
    data = DigitsDataModule(batch_size=BATCH_SIZE)
    data.setup()
    loader = data.train_dataloader()
    rows = []
    with tempfile.TemporaryDirectory() as log_dir:
        if settings.warmup:
            for kind in ("mixin", "hand-written"):
                timed_fit(build_module(kind, 1), loader, Settings(epochs=1), log_dir)
        for components, every in itertools.product(COMPONENTS, LOG_EVERY_N_STEPS):
            rows.append(measure(components, every, settings, loader, log_dir))
            ratio = rows[-1]["step_ratio"]
            print(f"K={components:<3} log every {every:<2} step ratio {ratio:.3f}", flush=True)
    header, body = table(rows)
    load = {"before": load_before, "after": os.getloadavg()[0]}
    title = (
        f"LossPlugMixin overhead per training step: pairs of fits per K: {settings.repeats}, "
        f"epochs per fit: {settings.epochs}, batch {BATCH_SIZE}, threads: {args.threads}; "
        f"1-minute load average {load['before']:.2f} before, {load['after']:.2f} after."
    )
    payload = {
        "machine": {**machine_info(torch.device("cpu")), "load_average": load},
        "source": source_version(),
        "settings": {
            **asdict(settings),
            "quick": args.quick,
            "batch_size": BATCH_SIZE,
            "target_ratio": {str(every): ratio for every, ratio in TARGET_RATIO.items()},
        },
        "rows": rows,
    }
    write_results(args.out, "bench_overhead", payload, title, header, body)
    differing = [row["components"] for row in rows if not row["same_weights"]]
    if differing:
        print(f"error: the two modules trained to different weights for K = {differing}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
