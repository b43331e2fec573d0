"""Two DDP processes, one of which meets a NaN validation loss; run as a script.

    PYTHONPATH=tests/helpers python tests/jobs/ddp_nonfinite_val_job.py

Under ``on_nonfinite="raise"`` the process whose loss was NaN names the batch, and the other
stops at the same point (lossplug's epoch-end collective) with its own error, saying the
loss was not finite on another process.
"""

from __future__ import annotations

import lightning as L
import torch
from ddp_cpu import two_rank_cpu_trainer
from exact_modules import Classifier, classes, loader


class Job(Classifier):
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        nan = self.global_rank == 1 and batch_idx == 1  # after the checked first batch
        return self.compute_loss(self(x) * (float("nan") if nan else 1.0), y)

    def val_dataloader(self):
        return loader(classes(32), 8)


if __name__ == "__main__":
    L.seed_everything(0)
    torch.set_num_threads(1)
    trainer = two_rank_cpu_trainer(max_epochs=1, logger=False, limit_train_batches=0)
    trainer.validate(Job())
