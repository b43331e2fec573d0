"""Two DDP processes of which one alone computes an auxiliary loss; run as a script.

    PYTHONPATH=tests/helpers python tests/jobs/ddp_names_job.py OUT_DIR

Lightning's defaults stay on: its ``DistributedSampler`` shares the 32 samples out, 16 a rank.
Rank 1 computes ``aux`` on its batches, rank 0 never does. Both registered the name when the
module was built, so the epoch's one ``all_reduce`` has the same slots on both: the run ends,
and ``train/aux`` (rank 1's samples alone) is logged on both. With the learning rate at 0,
each rank writes ``rank{r}.json``: its logged metrics, and the cross-entropy over the samples
it was given, recomputed after the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from ddp_cpu import two_rank_cpu_trainer
from exact_modules import Classifier, classes, loader


class Job(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.register_criterion("aux", "cross_entropy")
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append((x, y))
        loss = self.compute_loss(self(x), y)
        if self.global_rank == 1:
            loss = loss + self.compute_loss(self(x), y, name="aux")
        return loss

    def train_dataloader(self):
        return loader(classes(32), 8)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    L.seed_everything(0)
    torch.set_num_threads(1)
    model = Job()
    trainer = two_rank_cpu_trainer(max_epochs=1, logger=False, default_root_dir=out)
    trainer.fit(model)
    x, y = (torch.cat(parts) for parts in zip(*model.seen, strict=True))
    with torch.no_grad():
        own = F.cross_entropy(model(x).double(), y).item()
    metrics = {key: value.item() for key, value in trainer.callback_metrics.items()}
    result = {"metrics": metrics, "own_samples": own, "count": len(y)}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))
