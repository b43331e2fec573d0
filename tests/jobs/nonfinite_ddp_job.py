"""A 2-process DDP (gloo, CPU) run with ``on_nonfinite="skip"``; run as a script.

    PYTHONPATH=tests/helpers python tests/jobs/nonfinite_ddp_job.py OUT_DIR

Lightning's defaults stay on: its ``DistributedSampler`` shares the samples out (shuffled
in training). Only rank 1 meets a NaN target, in its training batch 2 and its validation
batch 1 (the job puts it into the batch it was given). Every rank writes ``rank{R}.json``:
whether its parameters and optimizer state were unchanged by training batch 2 (and changed
by batch 3), its skip counter, its final parameters and, on rank 0, the logged counters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from ddp_cpu import two_rank_cpu_trainer
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import LossPlugMixin

BAD_TRAIN_BATCH = 2
BAD_VAL_BATCH = 1
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05, "momentum": 0.9}


def data(batches: int) -> DataLoader:
    """``batches`` batches of 4 a rank."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * batches * 4, 3, generator=generator)
    return DataLoader(TensorDataset(x, x @ torch.tensor([1.0, -2.0, 0.5])), batch_size=4)


class Job(LossPlugMixin, L.LightningModule):
    def __init__(self) -> None:
        super().__init__(loss="mse", optimizer={**SGD, "weight_decay": 0.1}, on_nonfinite="skip")
        self.net = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def train_dataloader(self) -> DataLoader:
        return data(batches=5)

    def val_dataloader(self) -> DataLoader:
        return data(batches=3)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return super().training_step(self._poisoned(batch, batch_idx, BAD_TRAIN_BATCH), batch_idx)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return super().validation_step(self._poisoned(batch, batch_idx, BAD_VAL_BATCH), batch_idx)

    def _poisoned(self, batch, batch_idx: int, bad: int):
        """The batch, with a NaN target if it is rank 1's batch ``bad``."""
        x, y = batch
        if self.global_rank == 1 and batch_idx == bad:
            y = y.clone()
            y[0] = float("nan")
        return x, y


class StepEffects(Callback):
    """Whether each training batch changed the parameters or the optimizer state."""

    def __init__(self) -> None:
        self.changed: dict[int, bool] = {}
        self._before: list[torch.Tensor] = []

    @staticmethod
    def _state(trainer: L.Trainer, module: L.LightningModule) -> list[torch.Tensor]:
        momenta = [s["momentum_buffer"] for s in trainer.optimizers[0].state.values()]
        return [p.detach().clone() for p in module.parameters()] + [m.clone() for m in momenta]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._before = self._state(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        after = self._state(trainer, pl_module)
        same = len(after) == len(self._before) and all(
            torch.equal(a, b) for a, b in zip(after, self._before, strict=True)
        )
        self.changed[batch_idx] = not same


def main(out: Path) -> None:
    L.seed_everything(0)
    model = Job()
    effects = StepEffects()
    trainer = two_rank_cpu_trainer(
        max_epochs=1,
        logger=False,
        num_sanity_val_steps=0,  # the NaN batch would be dropped there too, then counted
        callbacks=[effects],
        default_root_dir=out,
    )
    trainer.fit(model)
    result = {
        "changed": effects.changed,
        "skipped_steps": model.nonfinite.skipped_steps,
        "params": [p.detach().flatten().tolist() for p in model.parameters()],
        "metrics": {name: float(value) for name, value in trainer.callback_metrics.items()},
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
