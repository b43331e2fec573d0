"""The Trainer every 2-process DDP test job runs: two CPU processes joined by gloo."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "barrier")


def two_rank_cpu_trainer(*, sampler: bool = True, **options: object) -> L.Trainer:
    """A 2-process DDP (gloo) CPU ``Trainer``; ``options`` add to or override its settings.

    With ``sampler=True`` (the default) Lightning's defaults stay on, as users run: its
    ``DistributedSampler`` in every loader (which pads the ranks to one size with repeated
    samples), the progress bar, checkpoints and the model summary. ``sampler=False`` is a
    user's own sharding: each rank keeps the data its job gives it, so a job can hand the
    ranks different, uneven batches.
    """
    settings: dict[str, object] = {
        "accelerator": "cpu",
        "devices": 2,
        "strategy": DDPStrategy(process_group_backend="gloo"),
    }
    if not sampler:
        settings["use_distributed_sampler"] = False
    return L.Trainer(**{**settings, **options})


def sampler_indices(size: int, seed: int, rank: int, world_size: int = 2) -> list[int]:
    """The dataset indices Lightning's ``DistributedSampler`` gives ``rank`` in epoch 0.

    Written out as torch lays them out for a shuffled training loader seeded by
    ``seed_everything(seed)``: a permutation of the ``size`` indices from a generator seeded
    ``seed``, padded to a multiple of the processes with its own first indices again, rank
    ``r`` taking every ``world_size``-th place from ``r`` (so a repeat comes last).
    """
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    padded = order + order[: -size % world_size]
    return padded[rank::world_size]


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
