"""The Trainer every 2-process DDP test job runs: two CPU processes joined by gloo."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.strategies import DDPStrategy


def two_rank_cpu_trainer(**options: object) -> L.Trainer:
    """A quiet 2-process DDP (gloo) CPU ``Trainer``; ``options`` add to or override its settings.

    Each rank keeps the data it was given (no distributed sampler), so a job can hand the two
    ranks different batches; no checkpoints, progress bar or model summary.
    """
    settings: dict[str, object] = {
        "accelerator": "cpu",
        "devices": 2,
        "strategy": DDPStrategy(process_group_backend="gloo"),
        "use_distributed_sampler": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**settings, **options})
