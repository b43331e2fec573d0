"""The Trainer every 2-process DDP test job runs: two CPU processes joined by gloo."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import lightning as L
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "barrier")


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


@contextmanager
def counting_collectives(calls: list[str]) -> Iterator[None]:
    """Append the name of each ``torch.distributed`` collective the block calls to ``calls``."""
    originals = {name: getattr(dist, name) for name in COLLECTIVES}
    for name, original in originals.items():
        setattr(dist, name, _counting(original, name, calls))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def _counting(function: Callable, name: str, calls: list[str]) -> Callable:
    def counted(*args, **kwargs):
        calls.append(name)
        return function(*args, **kwargs)

    return counted
