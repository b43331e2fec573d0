"""A 2-process DDP (gloo, CPU) job for the gradient-diagnostics tests; run as a script.

    PYTHONPATH=tests/helpers python tests/jobs/ddp_diagnostics_job.py OUT_DIR

Lightning's defaults stay on: its ``DistributedSampler`` gives each rank every other of the 80
samples (rank 1's, the odd ones, with targets of another kind), in batches of 8, and the job
trains with ``GradientDiagnostics(every_n_steps=2)`` for 5 SGD steps. Every rank
writes ``rank{r}.pt``: what it logged (a logger that records on every rank, unlike
TensorBoard's), its parameters and batch at the start of each step, and its final parameters.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from ddp_cpu import two_rank_cpu_trainer
from lightning.pytorch.loggers import Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import CompositeLoss, LossPlugMixin
from lossplug.diagnostics import GradientDiagnostics
from lossplug.losses import L1Loss, MSELoss

LR = 0.1
EVERY_N_STEPS = 2
MAX_STEPS = 5
WEIGHTS = {"mse": 1.0, "l1": 0.5}


def make_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def make_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(80, 4, generator=generator)
    y = 2 * torch.randn(80, 3, generator=generator)
    y[1::2] = -3 * y[1::2] - 3  # rank 1's targets differ in kind, not only in noise
    return TensorDataset(x, y)


class Job(LossPlugMixin, L.LightningModule):
    def __init__(self) -> None:
        loss = CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weights=WEIGHTS)
        super().__init__(loss=loss, optimizer=_sgd)
        self.net = make_net()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(make_data(), batch_size=8)


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=LR)


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call, on every rank."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append((step, dict(metrics)))


class Snapshots(L.Callback):
    """This rank's parameters and batch at the start of each step."""

    def __init__(self) -> None:
        self.steps: dict[int, dict[str, Any]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        state = {name: value.detach().clone() for name, value in pl_module.net.state_dict().items()}
        self.steps[trainer.global_step] = {"state": state, "batch": batch}


def main(out: Path) -> None:
    L.seed_everything(0)
    model = Job()
    logger, snapshots = RecordingLogger(), Snapshots()
    trainer = two_rank_cpu_trainer(
        max_steps=MAX_STEPS,
        logger=logger,
        callbacks=[snapshots, GradientDiagnostics(every_n_steps=EVERY_N_STEPS)],
        log_every_n_steps=50,
        default_root_dir=out,
    )
    trainer.fit(model)
    diagnostics = [
        (step, {k: v for k, v in metrics.items() if k.startswith("train/grad_")})
        for step, metrics in logger.records
        if any(key.startswith("train/grad_") for key in metrics)
    ]
    result = {
        "logged": diagnostics,
        "steps": snapshots.steps,
        "final": {name: value.detach().clone() for name, value in model.net.state_dict().items()},
        "settings": {"lr": LR, "weights": WEIGHTS, "every_n_steps": EVERY_N_STEPS},
    }
    torch.save(result, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
