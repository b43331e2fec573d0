"""Exact, DDP-synced epoch means of every loss component, in one state and one collective."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric

Weight = Tensor | float | int


def _all_reduce_sum(tensor: Tensor, group: object | None = None) -> list[Tensor]:
    """Sum a state across ranks with one ``all_reduce`` (a torchmetrics ``dist_sync_fn``).

    torchmetrics' default gathers each state's shape, then the state (after a barrier): three
    collectives. A sum needs one.
    """
    reduced = tensor.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM, group=group)
    return [reduced]


class LossMetrics(Metric):
    r"""Sample-weighted epoch means of named loss components.

    All components share **one** state, ``totals`` of shape ``(2, K)``: row 0 holds
    :math:`\sum_b w_b\,\bar\ell_{b,k}` and row 1 :math:`\sum_b w_b` for each component
    :math:`k`, where :math:`\bar\ell_{b,k}` is a batch's mean and :math:`w_b` the number of
    samples (or valid elements) that mean was taken over. The epoch value
    :math:`\sum_b w_b \bar\ell_{b,k} / \sum_b w_b` is therefore the exact mean over every sample
    of every rank, however uneven the batches, and syncing it costs one ``all_reduce`` whatever
    the number of components. ``update`` stays on the device: no ``.item()``, no collective.

    A component absent from a batch (say, no active triplet on this rank) adds weight 0, so
    every rank always holds the same keys. A component with no weight anywhere reads 0.

    Args:
        names: the component names, in logging order; ``None`` takes them from the first
            update (for a loss that cannot say in advance; every rank must then update at
            least once before the first sync).
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    totals: Tensor

    def __init__(self, names: Sequence[str] | None, **kwargs: object) -> None:
        kwargs.setdefault("dist_sync_fn", _all_reduce_sum)
        super().__init__(**kwargs)
        self.names: tuple[str, ...] = ()
        self._index: dict[str, int] = {}
        self.add_state("totals", torch.zeros(2, 0, dtype=torch.float64), dist_reduce_fx="sum")
        if names is not None:
            self._set_names(tuple(names))

    def _set_names(self, names: tuple[str, ...]) -> None:
        """Fix the component names and size the state for them."""
        if not names or len(set(names)) != len(names):
            raise ValueError(f"LossMetrics: 'names' must be unique and non-empty, got {names}")
        self.names = names
        self._index = {name: k for k, name in enumerate(names)}
        empty = torch.zeros(2, len(names), dtype=torch.float64)
        self._defaults["totals"] = empty.clone()
        self.totals = empty.to(self.totals.device)

    def update(
        self, components: Mapping[str, Tensor], weight: Weight | Mapping[str, Weight] = 1
    ) -> None:
        """Add one batch.

        Args:
            components: scalar batch means by name; names must be among :attr:`names`, and
                missing ones count with weight 0.
            weight: how many samples (or valid elements) the batch means average over; one
                number for all components, or one per component.

        Raises:
            KeyError: for a component name the metric was not built with.
            ValueError: for a component that is not a scalar.
        """
        if not self.names:
            self._set_names(tuple(components))
        unknown = set(components) - set(self._index)
        if unknown:
            raise KeyError(
                f"LossMetrics: components {sorted(unknown)} are not among the names "
                f"{list(self.names)} this metric was built with"
            )
        if not isinstance(weight, Mapping):
            weight = dict.fromkeys(components, weight)
        zero = self.totals.new_zeros(())
        values = torch.stack(
            [self._scalar(name, components.get(name), zero) for name in self.names]
        )
        weights = torch.stack(
            [
                torch.as_tensor(weight.get(name, 0), dtype=zero.dtype, device=zero.device)
                if name in components
                else zero
                for name in self.names
            ]
        )
        self.totals += torch.stack([values * weights, weights])

    @staticmethod
    def _scalar(name: str, value: Tensor | None, zero: Tensor) -> Tensor:
        """A component's detached scalar value, or ``zero`` when the batch has none."""
        if value is None:
            return zero
        if value.numel() != 1:
            raise ValueError(
                f"LossMetrics: component {name!r} must be a scalar batch mean, got shape "
                f"{tuple(value.shape)}"
            )
        return value.detach().reshape(()).to(zero.dtype)

    def compute(self) -> dict[str, Tensor]:
        """The epoch mean of each component (0 for a component that never had weight)."""
        sums, counts = self.totals
        means = torch.where(counts > 0, sums / counts.clamp_min(1e-300), 0.0)
        return {name: means[k].float() for k, name in enumerate(self.names)}
