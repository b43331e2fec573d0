"""One optimizer step of 3 accumulated micro-batches on each of 2 processes (gloo, CPU).

    PYTHONPATH=tests/helpers python tests/jobs/normalize_job.py OUT_DIR batch|global SHARDING

SHARDING: ``sampler`` (Lightning's defaults, its ``DistributedSampler`` on) or ``own`` (each
rank's data its own; tests/helpers/normalize_cases.py).
Rank 0 writes the parameters after the step to ``params.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
from ddp_cpu import two_rank_cpu_trainer
from normalize_cases import SEED, Model

if __name__ == "__main__":
    out_dir, normalize, sharding = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    L.seed_everything(SEED)  # as users do; it also seeds Lightning's distributed sampler
    model = Model(normalize, sharding)
    trainer = two_rank_cpu_trainer(
        sampler=sharding == "sampler",
        accumulate_grad_batches=3,
        max_steps=1,
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        default_root_dir=out_dir,
    )
    trainer.fit(model)
    if trainer.is_global_zero:
        params = {name: p.flatten().tolist() for name, p in model.net.named_parameters()}
        (out_dir / "params.json").write_text(json.dumps(params))
