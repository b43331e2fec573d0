"""What GradientDiagnostics costs per training step, against the same run without it.

The model, loss and data are the default segmentation experiment's, composed from the package's
Hydra config (``experiment=segmentation``: ``lossplug.demo.models.Segmenter``, a small U-Net on the
generated shapes, batch 32, AdamW, loss ``dice_ce`` with its two terms). Each fit trains the
same seeded model on the same batches for a fixed number of optimizer steps, without
validation, with a TensorBoard logger in a temporary folder (the diagnostics write to it):

- **none**: no callback;
- **every N**: ``GradientDiagnostics(every_n_steps=N)`` for N = 1, 10, 50 (``--every-n-steps``).

A callback stamps ``time.perf_counter()`` around every training batch (forward, loss, the
diagnostics on sampled steps, backward, optimizer step) and at the start and end of training:

- **sampled step / other step**: the median batch time of the steps the callback diagnoses
  (``global_step % N == 0``) and of the others; step 0 (warm-up) is left out;
- **mean per step**: the whole fit (data loading, logging, epoch ends included) divided by its
  steps: what a run pays on average at that ``every_n_steps``;
- **1 + (sampled / plain - 1) / N**: the mean ratio the sampled steps' cost implies, which
  a noisy machine measures more reliably than the mean ratio itself when N is large.

The fits run in the same process, alternating their order round by round after one untimed
warm-up fit; a ratio is against the run without the callback of the same round (the median
over rounds of the ratio). Every fit must end with the same weights as the one without
diagnostics (``torch.equal``): the diagnostics leave the update alone.

    python -m benchmarks.bench_diagnostics          # bench_results/bench_diagnostics.{json,md}
    python -m benchmarks.bench_diagnostics --quick  # a smoke run: one short fit each
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from benchmarks.bench_overhead import quiet_lightning, source_version
from benchmarks.benchkit import machine_info, paired_ratio, write_results
from lossplug.diagnostics import GradientDiagnostics

EVERY_N_STEPS = (1, 10, 50)
BASELINE = "none"
SEED = 0


@dataclass(frozen=True)
class Settings:
    """How much to measure: rounds (one fit of each configuration per round), steps per fit."""

    rounds: int = 5
    steps: int = 150
    warmup: bool = True


QUICK = Settings(rounds=1, steps=12, warmup=False)


class BatchTimer(pl.Callback):
    """Stamps ``time.perf_counter()`` around every training batch and around training."""

    def __init__(self) -> None:
        self.batch_seconds: dict[int, float] = {}
        self._batch_start = 0.0
        self.train_start = self.train_end = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clock of the whole fit."""
        self.train_start = time.perf_counter()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Stamp a batch's start."""
        self._batch_start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Record the batch's time under the step it made (``global_step`` has moved on)."""
        self.batch_seconds[trainer.global_step - 1] = time.perf_counter() - self._batch_start

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop the clock of the whole fit."""
        self.train_end = time.perf_counter()


#: the demo app's config (scripts/train.py's).
DEMO_CONF = Path(__file__).resolve().parents[1] / "conf"


def segmentation_config() -> DictConfig:
    """The composed ``train.yaml`` of ``experiment=segmentation``."""
    with initialize_config_dir(str(DEMO_CONF), version_base="1.3"):
        return compose("train", overrides=["experiment=segmentation"])


def build_module(cfg: DictConfig) -> pl.LightningModule:
    """The experiment's model with its loss and optimizer, seeded: the same start every time."""
    pl.seed_everything(SEED, verbose=False)
    return instantiate(
        cfg.model,
        loss=cfg.loss,
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler,
        _recursive_=False,
    )


def timed_fit(
    cfg: DictConfig, every_n_steps: int | None, loader: DataLoader, steps: int, log_dir: str
) -> tuple[BatchTimer, pl.LightningModule]:
    """Fit for ``steps`` steps, with diagnostics every ``every_n_steps`` steps (``None``: off)."""
    module = build_module(cfg)
    timer = BatchTimer()
    callbacks: list[pl.Callback] = [timer]
    if every_n_steps is not None:
        callbacks.append(GradientDiagnostics(every_n_steps=every_n_steps))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        logger=TensorBoardLogger(log_dir, name="bench_diagnostics"),
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    pl.seed_everything(SEED, verbose=False)  # the same batches for every fit
    trainer.fit(module, train_dataloaders=loader)
    return timer, module


def split_steps(timer: BatchTimer, every_n_steps: int | None) -> tuple[list[float], list[float]]:
    """Batch times of the sampled steps and of the others, step 0 left out."""
    sampled, other = [], []
    for step, seconds in timer.batch_seconds.items():
        if step == 0:
            continue
        is_sampled = every_n_steps is not None and step % every_n_steps == 0
        (sampled if is_sampled else other).append(seconds)
    return sampled, other


def measure(
    cfg: DictConfig,
    loader: DataLoader,
    settings: Settings,
    every_n_steps: Sequence[int],
    log_dir: str,
) -> list[dict]:
    """Fit without diagnostics and at each ``every_n_steps``, alternating their order."""
    names: list[str] = [BASELINE, *map(str, every_n_steps)]
    sampled: dict[str, list[float]] = {name: [] for name in names}
    other: dict[str, list[float]] = {name: [] for name in names}
    mean: dict[str, list[float]] = {name: [] for name in names}
    same_weights = dict.fromkeys(names, True)
    for round_ in range(settings.rounds):
        trained = {}
        for name in names if round_ % 2 == 0 else names[::-1]:
            every_n = None if name == BASELINE else int(name)
            timer, trained[name] = timed_fit(cfg, every_n, loader, settings.steps, log_dir)
            sampled_s, other_s = split_steps(timer, every_n)
            sampled[name].append(statistics.median(sampled_s) if sampled_s else float("nan"))
            other[name].append(statistics.median(other_s) if other_s else float("nan"))
            mean[name].append((timer.train_end - timer.train_start) / settings.steps)
        for name in names:
            same_weights[name] &= all(
                torch.equal(a, b)
                for a, b in zip(
                    trained[name].parameters(), trained[BASELINE].parameters(), strict=True
                )
            )
    base_step = other[BASELINE]
    return [
        {
            "every_n_steps": name,
            "sampled_step_ms": 1e3 * statistics.median(sampled[name]),
            "other_step_ms": 1e3 * statistics.median(other[name]),
            "sampled_step_ratio": paired_ratio(sampled[name], base_step),
            "other_step_ratio": paired_ratio(other[name], base_step),
            "mean_step_ms": 1e3 * statistics.median(mean[name]),
            "mean_step_ratio": paired_ratio(mean[name], mean[BASELINE]),
            "expected_mean_ratio": expected_mean_ratio(
                name, paired_ratio(sampled[name], base_step)
            ),
            "same_weights": same_weights[name],
        }
        for name in names
    ]


def expected_mean_ratio(name: str, sampled_ratio: float) -> float:
    """The mean step ratio that one sampled step in N implies: ``1 + (ratio - 1) / N``.

    On a noisy machine the measured mean ratio of a rare sampling (N = 50) drowns in the
    noise of the plain steps; this one is taken from the sampled steps alone.
    """
    if name == BASELINE:
        return 1.0
    return 1 + (sampled_ratio - 1) / int(name)


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the results table."""
    header = [
        "every_n_steps",
        "sampled step ms",
        "other step ms",
        "sampled / plain step",
        "other / plain step",
        "mean ms / step",
        "mean / plain",
        "1 + (sampled / plain - 1) / N",
        "same weights",
    ]

    def cell(value: float, digits: int) -> str:
        return "-" if value != value else f"{value:.{digits}f}"  # NaN: no such steps

    body = [
        [
            row["every_n_steps"],
            cell(row["sampled_step_ms"], 2),
            cell(row["other_step_ms"], 2),
            cell(row["sampled_step_ratio"], 2),
            cell(row["other_step_ratio"], 2),
            cell(row["mean_step_ms"], 2),
            cell(row["mean_step_ratio"], 3),
            cell(row["expected_mean_ratio"], 3),
            "yes" if row["same_weights"] else "NO",
        ]
        for row in rows
    ]
    return header, body


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one short fit each")
    parser.add_argument("--rounds", type=int, help="fits of each configuration (default 5)")
    parser.add_argument("--steps", type=int, help="optimizer steps per fit (default 150)")
    parser.add_argument(
        "--every-n-steps",
        type=int,
        nargs="+",
        default=EVERY_N_STEPS,
        help=f"the settings to time (default {' '.join(map(str, EVERY_N_STEPS))})",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else Settings()
    settings = replace(
        settings, rounds=args.rounds or settings.rounds, steps=args.steps or settings.steps
    )
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    quiet_lightning()
    cfg = segmentation_config()
    data = instantiate(cfg.data)
    data.setup("fit")
    loader = data.train_dataloader()
    with tempfile.TemporaryDirectory() as log_dir:
        if settings.warmup:
            timed_fit(cfg, 1, loader, 20, log_dir)
        rows = measure(cfg, loader, settings, args.every_n_steps, log_dir)
    header, body = table(rows)
    load = {"before": load_before, "after": os.getloadavg()[0]}
    title = (
        f"GradientDiagnostics cost per training step, experiment=segmentation "
        f"(Segmenter, dice_ce: 2 terms, batch {cfg.data.batch_size}): {settings.rounds} rounds "
        f"of {settings.steps}-step fits, threads: {args.threads}; 1-minute load average "
        f"{load['before']:.2f} before, {load['after']:.2f} after."
    )
    payload = {
        "machine": {**machine_info(torch.device("cpu")), "load_average": load},
        "source": source_version(),
        "settings": {
            **asdict(settings),
            "quick": args.quick,
            "threads": args.threads,
            "every_n_steps": args.every_n_steps,
        },
        "rows": rows,
    }
    write_results(args.out, "bench_diagnostics", payload, title, header, body)
    differing = [row["every_n_steps"] for row in rows if not row["same_weights"]]
    if differing:
        print(f"error: diagnostics every {differing} steps changed the trained weights")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
