"""Two processes (gloo, CPU, float64) train one DDP step with each ``gather=True`` loss.

    PYTHONPATH=tests/helpers python tests/jobs/gather_job.py OUT_DIR PORT

Rank 0 holds the first 6 samples of an 11-sample batch and rank 1 the last 5 (uneven, and a
label that lives wholly on one rank). Each rank embeds its own samples with the same
DDP-wrapped linear model, takes the loss with ``gather=True`` and runs backward; DDP averages
the parameters' gradients. Each rank writes ``rank{r}.json``: per loss, the loss value, its
components, their counts and the averaged gradient of every parameter.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp
from gather_cases import SLICES, batch, losses, model, step
from torch.nn.parallel import DistributedDataParallel


def run(rank: int, out_dir: str, port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x, labels = batch()
    net = DistributedDataParallel(model())
    results = {
        name: step(net, criterion, x[SLICES[rank]], labels[SLICES[rank]])
        for name, criterion in losses(gather=True).items()
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.barrier()  # neither rank tears gloo down while the other still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(run, args=(sys.argv[1], sys.argv[2]), nprocs=2)
