"""What the misuse checks read from a batch: value range, row sums, non-finite counts.

:meth:`BatchStats.measure` computes them on the device for every term and brings them to the
host with one synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lossplug.input_checks.terms import Term
from lossplug.losses.base import LossModule


@dataclass(frozen=True)
class BatchStats:
    """What the checks need to know about the input of a loss, read from the device at once.

    Attributes:
        shape: ``pred``'s shape.
        nonfinite_pred: how many values of ``pred`` are NaN or infinite.
        nonfinite_target: the same for a floating-point ``target`` (0 for another).
        lowest: ``pred``'s smallest value.
        highest: its largest value.
        sum_error: per class dimension, the largest distance of a row sum from 1.
        log_sum_error: per class dimension, the largest ``|logsumexp|`` of a row.
        tolerance: how far from 1 a sum of probabilities in ``pred``'s dtype may round.
    """

    shape: tuple[int, ...]
    nonfinite_pred: int
    nonfinite_target: int
    lowest: float
    highest: float
    sum_error: dict[int, float]
    log_sum_error: dict[int, float]
    tolerance: float

    @classmethod
    def measure(cls, terms: list[Term]) -> list[BatchStats]:
        """The statistics of each term's (non-empty) input, with one host synchronisation.

        Terms that receive the same tensors share one measurement, with row sums along
        every class dimension they declare.
        """
        groups: dict[tuple[int, int], list[Term]] = {}
        for term in terms:
            groups.setdefault((id(term.pred), id(term.target)), []).append(term)
        plans = []
        with torch.no_grad():
            for members in groups.values():
                pred, target = members[0].pred, members[0].target
                dims = sorted({class_dim_of(term.loss, pred.shape) for term in members} - {None})
                plans.append((pred, dims, _device_statistics(pred, target, dims)))
            if not plans:
                return []
            device = plans[0][0].device
            host = torch.cat([numbers.to(device) for _, _, numbers in plans]).tolist()  # 1 sync
        measured, offset = {}, 0
        for key, (pred, dims, numbers) in zip(groups, plans, strict=True):
            measured[key] = cls._from_host(pred, dims, host[offset : offset + len(numbers)])
            offset += len(numbers)
        return [measured[(id(term.pred), id(term.target))] for term in terms]

    @classmethod
    def _from_host(cls, pred: Tensor, dims: list[int], values: list[float]) -> BatchStats:
        """The statistics from the numbers :func:`_device_statistics` computed."""
        return cls(
            shape=tuple(pred.shape),
            nonfinite_pred=int(values[0]),
            nonfinite_target=int(values[1]),
            lowest=values[2],
            highest=values[3],
            sum_error=dict(zip(dims, values[4::2], strict=True)),
            log_sum_error=dict(zip(dims, values[5::2], strict=True)),
            tolerance=max(1e-3, 2 * torch.finfo(pred.dtype).eps),
        )

    @property
    def numel(self) -> int:
        """The number of values in ``pred``."""
        return int(torch.Size(self.shape).numel())

    @property
    def in_unit_interval(self) -> bool:
        """Whether every value of ``pred`` is in [0, 1] (and some is not 0)."""
        return self.lowest >= 0.0 and 0.0 < self.highest <= 1.0

    def sums_to_one(self, dim: int | None) -> bool:
        """Whether every row along ``dim`` sums to 1, to rounding."""
        return dim is not None and self.sum_error[dim] <= self.tolerance

    def describe_range(self) -> str:
        """``pred``'s range in words."""
        return f"min {self.lowest:.4g}, max {self.highest:.4g}"


def class_dim_of(loss: LossModule, shape: torch.Size | tuple[int, ...]) -> int | None:
    """``loss``'s class dimension in ``shape`` (non-negative) if it has one of 2+ classes."""
    dim = loss.class_dim
    if loss.input_space not in ("logits", "probs", "log_probs") or dim is None:
        return None
    if not -len(shape) <= dim < len(shape):
        return None
    dim %= len(shape)
    return dim if shape[dim] > 1 else None


def _device_statistics(pred: Tensor, target: Any, dims: list[int]) -> Tensor:
    """The numbers the checks need, as one tensor on ``pred``'s device.

    In order: the non-finite counts of ``pred`` and ``target``, ``pred``'s smallest and
    largest value, then for each dim of ``dims`` the largest ``|row sum - 1|`` and the largest
    ``|logsumexp(row)|``.
    """
    values = pred.detach()
    wide = values.float() if values.element_size() < 4 else values
    lowest, highest = torch.aminmax(wide)
    parts = [_count_nonfinite(values), _count_nonfinite(target).to(values.device), lowest, highest]
    for dim in dims:
        parts.append((wide.sum(dim) - 1).abs().amax())
        parts.append(wide.logsumexp(dim).abs().amax())
    return torch.stack([part.float() for part in parts])


def _count_nonfinite(tensor: Any) -> Tensor:
    """How many NaN or infinite values a floating tensor holds (0 for anything else)."""
    if is_floating(tensor):
        return (~torch.isfinite(tensor.detach())).sum()
    return torch.zeros((), dtype=torch.long)


def is_floating(tensor: Any) -> bool:
    """Whether ``tensor`` is a floating-point tensor."""
    return isinstance(tensor, Tensor) and tensor.is_floating_point()
