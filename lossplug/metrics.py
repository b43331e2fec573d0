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


def _scalar(name: str, value: Tensor) -> Tensor:
    """A component's detached value as a 0-d tensor; the batch mean must be a scalar."""
    if value.ndim:
        if value.numel() != 1:
            raise ValueError(
                f"LossMetrics: component {name!r} must be a scalar batch mean, got shape "
                f"{tuple(value.shape)}"
            )
        value = value.reshape(())
    return value.detach()


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
        present = [name for name in self.names if name in components]
        if not present:
            return
        values = torch.stack([_scalar(name, components[name]) for name in present])
        if isinstance(weight, Mapping):
            counts = [weight.get(name, 0) for name in present]
        else:
            counts = [weight] * len(present)
        dtype, device = self.totals.dtype, self.totals.device
        if any(isinstance(count, Tensor) for count in counts):
            weights = torch.stack([torch.as_tensor(count, device=device) for count in counts])
            weights = weights.to(dtype)
        else:
            weights = torch.tensor(counts, dtype=dtype, device=device)
        batch = torch.stack([values.to(dtype) * weights, weights])
        if len(present) == len(self.names):
            self.totals.add_(batch)
        else:
            columns = torch.tensor([self._index[name] for name in present], device=device)
            self.totals.index_add_(1, columns, batch)

    def compute(self) -> dict[str, Tensor]:
        """The epoch mean of each component (0 for a component that never had weight)."""
        sums, counts = self.totals
        means = torch.where(counts > 0, sums / counts.clamp_min(1e-300), 0.0)
        return {name: means[k].float() for k, name in enumerate(self.names)}
