"""The samples a distributed sampler repeats to even out the processes, and how to drop them.

``torch.utils.data.DistributedSampler`` (which Lightning puts in every loader under DDP)
gives each of ``W`` processes ``ceil(N / W)`` samples: when ``N`` is not a multiple of ``W``
it pads the list of ``N`` indices with its first ones, so some processes see one sample twice
in an epoch. The padded places are the last ones of the list, and each process takes every
``W``-th place from its rank, so on every process the repeats are the *last* samples of the
epoch: process ``r`` has ``len(range(r, N, W))`` real ones, then at most one repeat.
:func:`real_rows` tells from that how many leading rows of a batch are real, with no
communication; :func:`take_rows` cuts a batch (or a model output) to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor
from torch.utils.data import BatchSampler, DistributedSampler


@dataclass(frozen=True)
class PaddedEpoch:
    """How a loader's epoch on this process ends in repeated samples.

    Attributes:
        real: how many of this process's samples are real (the rest repeat others).
        batch_size: the size of every batch but the last.
    """

    real: int
    batch_size: int

    def real_rows(self, batch_idx: int, rows: int) -> int:
        """How many leading rows of batch ``batch_idx`` (of ``rows`` rows) are real samples."""
        return max(0, min(rows, self.real - batch_idx * self.batch_size))


class UnknownBatchSizeError(ValueError):
    """A loader pads with repeated samples but has no fixed batch size to place them by."""


def padded_epoch(loader: Any) -> PaddedEpoch | None:
    """Where a loader's repeated samples lie on this process; ``None`` if it repeats none.

    Args:
        loader: a ``DataLoader`` (anything else repeats nothing that can be known).

    Raises:
        UnknownBatchSizeError: if the sampler pads but the loader's batches have no fixed size.
    """
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    if not isinstance(sampler, DistributedSampler):
        sampler = getattr(batch_sampler, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    size = len(sampler.dataset)  # type: ignore[arg-type]
    if sampler.total_size == size:
        return None
    batch_size = getattr(loader, "batch_size", None)
    if batch_size is None and isinstance(batch_sampler, BatchSampler):
        batch_size = batch_sampler.batch_size
    if batch_size is None:
        raise UnknownBatchSizeError(
            f"LossPlugMixin: the DistributedSampler pads {size} samples to "
            f"{sampler.total_size} by repeating {sampler.total_size - size}, and the loader's "
            f"batch sampler ({type(batch_sampler).__name__}) has no fixed batch size, so the "
            "repeats cannot be left out of the epoch means. Fix: give the DataLoader a "
            "batch_size, or a sampler that does not pad (DistributedSampler(drop_last=True) "
            "or a dataset size divisible by the number of processes)"
        )
    real = len(range(sampler.rank, size, sampler.num_replicas))
    return PaddedEpoch(real=real, batch_size=int(batch_size))


def take_rows(value: Any, rows: int) -> Any:
    """The first ``rows`` rows of every tensor in ``value`` (dicts, tuples, lists followed).

    0-d tensors and anything that is not a tensor are kept whole.
    """
    if isinstance(value, Tensor):
        return value[:rows] if value.ndim else value
    if isinstance(value, Mapping):
        return {key: take_rows(item, rows) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(take_rows(item, rows) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(take_rows(item, rows) for item in value)
    return value
