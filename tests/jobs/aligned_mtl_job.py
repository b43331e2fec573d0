"""Aligned-MTL on 2 DDP processes (gloo, CPU), Lightning's defaults on; run as a script.

    PYTHONPATH=tests/helpers python tests/jobs/aligned_mtl_job.py OUT_DIR ACCUMULATE

Lightning's ``DistributedSampler`` shuffles the 23 samples of :data:`SIZE` and pads them to 24
with a repeat, which ends rank 1's second batch of 6; each rank trains on its 2 batches in
float64 with SGD (tests/helpers/multitask_cases.py), ``accumulate_grad_batches=ACCUMULATE``
(1: two steps; 2: one step of two micro-batches). Every rank writes ``rank{r}.json``: the
inputs of each batch it trained on, the weights each batch used, and its final parameters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
from ddp_cpu import two_rank_cpu_trainer
from multitask_cases import TwoHeads, dataset

SIZE, SEED = 23, 11


class Record(L.Callback):
    """Each training batch's inputs and the weights it used."""

    def __init__(self) -> None:
        self.inputs: list[list[list[float]]] = []
        self.weights: list[list[float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, *_):
        self.inputs.append(batch[0].tolist())
        self.weights.append(module.criterion.learned.factors().tolist())


def main(out: Path, accumulate: int) -> None:
    L.seed_everything(SEED)  # as users do; it also seeds Lightning's distributed sampler
    model, record = TwoHeads(data=dataset(SIZE)), Record()
    trainer = two_rank_cpu_trainer(
        max_epochs=1,
        precision="64-true",
        accumulate_grad_batches=accumulate,
        callbacks=[record],
        default_root_dir=out,
    )
    trainer.fit(model)
    params = {name: p.detach().reshape(-1).tolist() for name, p in model.named_parameters()}
    report = {"inputs": record.inputs, "weights": record.weights, "params": params}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
