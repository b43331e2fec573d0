"""A callback that checks, after every training step, that every process holds the same loss
weights (the criterion's parameters and buffers: learned log-variances, DWA's history)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch


class LossWeightsAgree(pl.Callback):
    """Gathers the criterion's state from every process after each training step.

    Raises on the first step where two processes differ; at the end of training each process
    writes how many steps it checked to ``loss_weights_agree_rank{r}.json`` in the trainer's
    ``default_root_dir``.
    """

    def __init__(self) -> None:
        self.checked = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any
    ) -> None:
        """Compare this process's criterion state with every other process's."""
        state = pl_module.criterion.state_dict()
        flat = torch.cat([value.detach().double().flatten() for value in state.values()])
        gathered = pl_module.all_gather(flat)
        for rank, other in enumerate(gathered):
            if not torch.equal(other, flat):
                raise AssertionError(
                    f"step {trainer.global_step}: rank {trainer.global_rank}'s loss weights "
                    f"{flat.tolist()} differ from rank {rank}'s {other.tolist()} ({list(state)})"
                )
        self.checked += 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the number of steps checked."""
        path = Path(trainer.default_root_dir) / f"loss_weights_agree_rank{trainer.global_rank}.json"
        report = {"checked": self.checked, "world_size": trainer.world_size}
        path.write_text(json.dumps({**report, "names": list(pl_module.criterion.state_dict())}))
