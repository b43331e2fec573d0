"""Exact, DDP-synced epoch means of every loss component, in one state and one collective."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
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

    All components share **one** state, ``totals`` of shape ``(2, K + 1)``: for each component
    :math:`k`, row 0 holds :math:`\sum_b w_b\,\bar\ell_{b,k}` and row 1 :math:`\sum_b w_b`,
    where :math:`\bar\ell_{b,k}` is a batch's mean and :math:`w_b` the number of samples (or
    valid elements) that mean was taken over; the last column counts the batches. The epoch
    value :math:`\sum_b w_b \bar\ell_{b,k} / \sum_b w_b` is therefore the exact mean over every
    sample of every rank, however uneven the batches, and syncing it costs one ``all_reduce``
    whatever the number of components. ``update`` stays on the device: no ``.item()``, no
    collective.

    The state stays float64 when the module is cast (``precision="bf16-true"`` casts the whole
    LightningModule): a sum over thousands of batches in 16 bits would lose the mean.

    A component absent from a batch (say, no active triplet on this rank) adds weight 0, so
    every rank always holds the same keys. A component with no weight anywhere reads 0.

    Args:
        names: the component names, in logging order; ``None`` takes them from the first
            update (for a loss that cannot say in advance; every rank must then update at
            least once before the first sync).
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = LossMetrics(["ce"])
        >>> metric.update({"ce": torch.tensor(1.0)}, weight=3)
        >>> metric.update({"ce": torch.tensor(2.0)}, weight=1)
        >>> metric.compute()["ce"]
        tensor(1.2500)
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
        self.add_state("totals", torch.zeros(2, 1, dtype=torch.float64), dist_reduce_fx="sum")
        if names is not None:
            self._set_names(tuple(names))

    def _set_names(self, names: tuple[str, ...]) -> None:
        """Fix the component names and size the state for them."""
        if not names or len(set(names)) != len(names):
            raise ValueError(f"LossMetrics: 'names' must be unique and non-empty, got {names}")
        self.names = names
        self._index = {name: k for k, name in enumerate(names)}
        empty = torch.zeros(2, len(names) + 1, dtype=torch.float64)
        self._defaults["totals"] = empty.clone()
        self.totals = empty.to(self.totals.device)

    def update(
        self,
        components: Mapping[str, Tensor],
        weight: Weight | Mapping[str, Weight] = 1,
        batches: int = 1,
    ) -> None:
        """Add one batch.

        Args:
            components: scalar batch means by name; names must be among :attr:`names`, and
                missing ones count with weight 0.
            weight: how many samples (or valid elements) the batch means average over; one
                number for all components, or one per component.
            batches: how many batches this adds (0 for one that holds no sample of the
                epoch, such as a distributed sampler's repeats alone).

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
        dtype, device = self.totals.dtype, self.totals.device
        values = [_scalar(name, components[name]) for name in present]
        if isinstance(weight, Mapping):
            counts = [weight.get(name, 0) for name in present]
        else:
            counts = [weight] * len(present)
        # the batch column: one batch, in both rows
        values.append(torch.ones((), device=device))
        counts.append(batches)
        if any(isinstance(count, Tensor) for count in counts):
            weights = torch.stack([torch.as_tensor(count, device=device) for count in counts])
            weights = weights.to(dtype)
        else:
            weights = torch.tensor(counts, dtype=dtype, device=device)
        batch = torch.stack([torch.stack(values).to(dtype) * weights, weights])
        if len(present) == len(self.names):
            self._add(batch)
        else:
            columns = [self._index[name] for name in present] + [len(self.names)]
            full = torch.zeros_like(self.totals)
            full.index_add_(1, torch.tensor(columns, device=device), batch)
            self._add(full)

    def _add(self, batch: Tensor) -> None:
        """Add to the state; out of place where it was made under ``torch.inference_mode``.

        ``trainer.validate`` runs under inference mode, so a state reset there is an
        inference tensor, which a later ``trainer.fit`` may not update in place.
        """
        if self.totals.is_inference() and not torch.is_inference_mode_enabled():
            self.totals = self.totals + batch
        else:
            self.totals.add_(batch)

    @property
    def batches(self) -> Tensor:
        """How many batches this process added since the last reset."""
        return self.totals[0, -1]

    def compute(self) -> dict[str, Tensor]:
        """The epoch mean of each component (0 for a component that never had weight)."""
        return self.means(self.totals)

    def means(self, totals: Tensor) -> dict[str, Tensor]:
        """Each component's mean from a state of this metric's shape (summed over processes).

        Args:
            totals: a ``(2, K + 1)`` state such as :attr:`totals`.

        Returns:
            ``{name: mean}`` in float32, 0 for a component that never had weight.
        """
        sums, counts = totals[:, :-1]
        means = torch.where(counts > 0, sums / counts.clamp_min(1e-300), 0.0)
        return {name: means[k].float() for k, name in enumerate(self.names)}

    def _apply(
        self, fn: Callable[[Tensor], Tensor], exclude_state: Sequence[str] = ()
    ) -> nn.Module:
        """Move the state with the module, keeping it float64 (``module.to(bfloat16)`` too)."""
        this = super()._apply(fn, exclude_state=(*exclude_state, "totals"))
        if "totals" not in exclude_state:
            device = fn(torch.zeros((), device=this.totals.device)).device
            this.totals = this.totals.to(device)
            this._defaults["totals"] = this._defaults["totals"].to(device)
        return this


def reduce_together(states: Sequence[Tensor]) -> list[Tensor]:
    """Sum tensors over all processes with one ``all_reduce`` (unchanged in one process).

    Every process must pass tensors of the same shapes, in the same order.

    Args:
        states: tensors of one dtype and device.

    Returns:
        The summed tensors, in the shapes given.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(states)
    flat = torch.cat([state.reshape(-1) for state in states])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return [
        part.reshape(state.shape)
        for part, state in zip(flat.split([s.numel() for s in states]), states, strict=True)
    ]
