"""One optimizer step of 3 accumulated micro-batches on each of 2 processes (gloo, CPU), for
every loss of tests/helpers/normalize_cases.py, with ``normalize_loss`` batch and global.

    PYTHONPATH=tests/helpers python tests/jobs/normalize_job.py OUT_DIR SHARDING

SHARDING: ``sampler`` (Lightning's defaults, its ``DistributedSampler`` on) or ``own`` (each
rank's data its own). Each (loss, normalize_loss) is a fit of its own, one after the other in
the same two processes. Rank 0 writes the parameters after each step to ``params.json``:
``{loss: {normalize_loss: {name: values}}}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
from ddp_cpu import two_rank_cpu_trainer
from normalize_cases import CASES, SEED, Model, trained

if __name__ == "__main__":
    out_dir, sharding = Path(sys.argv[1]), sys.argv[2]
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for case in CASES:
        for normalize in ("batch", "global"):
            L.seed_everything(SEED)  # as users do; it also seeds Lightning's distributed sampler
            model = Model(normalize, sharding, case)
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
            results.setdefault(case, {})[normalize] = trained(model)
    if trainer.is_global_zero:
        (out_dir / "params.json").write_text(json.dumps(results))
