"""What happens when a loss turns NaN or infinite: stop, skip the step, or warn.

One NaN loss poisons the weights in a single optimizer step, and every value after it. The
:class:`NonFiniteGuard` watches each batch's total and components without a host
synchronisation per step: it keeps them as one small tensor on the device and reads the
tensors of many batches back at once, when a check is due. ``on_nonfinite`` chooses what a
non-finite value (NaN, +inf or -inf) does:

``"raise"`` (the default)
    Stop with a :class:`NonFiniteLossError` naming the stage, the epoch, the batch and the
    non-finite components. Checks run on the trainer's logging steps (``log_every_n_steps``,
    where the logger reads values back anyway), at the end of every epoch of every stage,
    before a checkpoint is saved (so no checkpoint holds the poisoned weights) and after at
    most :data:`MAX_PENDING` batches. The run therefore stops a few steps after the bad
    batch, and the message names the bad batch itself.
``"skip"``
    Training: drop the optimizer step of a batch whose loss is not finite. The optimizer is
    not called: parameters, momenta, weight-decay and step counts stay exactly as they were;
    the gradients are discarded. Each dropped step counts in :attr:`NonFiniteGuard.skipped_steps`
    (logged, saved in checkpoints). Deciding needs the flag on the host before the step, so
    ``"skip"`` costs one host read per optimizer step (as torch's ``GradScaler`` does), and,
    with several processes, one ``all_reduce`` of the flag per training batch (per
    optimizer step without gradient accumulation), so that a NaN on one process
    drops the step on all of them and they stay identical. The step still counts in
    ``global_step`` and in a per-step learning-rate schedule, as a step ``GradScaler`` skips.
    With gradient accumulation a non-finite batch drops the whole accumulated step.
    Validation and test: the batch is left out of the epoch means and counted; nothing is
    synchronised per batch.
``"warn"``
    Warn (:class:`NonFiniteLossWarning`) at the same checks as ``"raise"`` and go on; the
    epoch means then show the NaN.

Only ``"skip"`` leaves non-finite batches out of the epoch means; under the other two
policies the means show the NaN or inf.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from lossplug._validation import check_choice

NONFINITE_POLICIES = ("raise", "skip", "warn")
#: the most batches of one stage whose values wait on the device for a check.
MAX_PENDING = 100
#: how the total is named among the components in messages.
TOTAL = "total"
STAGE_WORDS = {"train": "training", "val": "validation", "test": "test"}


class NonFiniteLossError(RuntimeError):
    """A loss was NaN or infinite and ``on_nonfinite="raise"``."""


class NonFiniteLossWarning(RuntimeWarning):
    """A loss was NaN or infinite; the run went on (``"warn"``) or dropped it (``"skip"``)."""


@dataclass(frozen=True)
class NonFiniteBatch:
    """A batch whose loss was not finite, as read back on the host.

    Attributes:
        stage: ``"train"``, ``"val"`` or ``"test"``.
        epoch: the epoch, from 0.
        batch_idx: the batch's index within the epoch.
        values: the first non-finite value of the total and of each non-finite component,
            on this process.
        processes: how many processes had a non-finite loss in this batch, where that was
            synchronised (training with ``"skip"``); otherwise ``None``.
    """

    stage: str
    epoch: int
    batch_idx: int
    values: dict[str, float]
    processes: int | None = None

    def describe(self) -> str:
        """``"epoch 0, batch 3: 'mse' is nan, total is nan"``."""
        parts = [
            f"{name} is {value}" if name == TOTAL else f"{name!r} is {value}"
            for name, value in self.values.items()
        ]
        if not parts:
            parts = ["the loss is finite here but not on another process"]
        elif TOTAL in self.values and len(parts) == 1:
            parts.append("every component is finite (is a weight not finite?)")
        if self.processes is not None and _world_size() > 1:
            parts.append(f"non-finite on {self.processes} of {_world_size()} processes")
        return f"epoch {self.epoch}, batch {self.batch_idx}: {', '.join(parts)}"


class _Observation(NamedTuple):
    """One batch's flattened total and components on the device, not yet read."""

    epoch: int
    batch_idx: int
    names: tuple[str, ...]
    #: how many values each name has; ``None`` when every one is a scalar.
    sizes: tuple[int, ...] | None
    #: the values, then (when synchronised) how many processes had a non-finite one.
    values: Tensor
    synced: bool


class NonFiniteGuard:
    """Watches a module's losses for NaN and inf, and applies an ``on_nonfinite`` policy.

    :class:`~lossplug.LossPlugMixin` drives it: :meth:`observe` on every batch,
    :meth:`check` at the trainer's logging steps and before checkpoints,
    :meth:`end_step` at every optimizer step (``"skip"`` only) and :meth:`end_epoch` at the
    end of each stage's epoch. Only :meth:`check`, :meth:`end_step` and :meth:`end_epoch`
    read values on the host.

    Args:
        policy: ``"raise"``, ``"skip"`` or ``"warn"`` (see :mod:`lossplug.nonfinite`).

    Raises:
        ValueError: for another policy.
    """

    def __init__(self, policy: str) -> None:
        check_choice("LossPlugMixin", "on_nonfinite", policy, NONFINITE_POLICIES)
        self.policy = policy
        #: training steps dropped so far (``"skip"``), over the whole run.
        self.skipped_steps = 0
        self._pending: dict[str, list[_Observation]] = {}
        self._dropped: dict[str, list[NonFiniteBatch]] = {}

    @property
    def skips(self) -> bool:
        """Whether non-finite batches are dropped (``"skip"``)."""
        return self.policy == "skip"

    def observe(
        self,
        stage: str,
        epoch: int,
        batch_idx: int,
        total: Tensor,
        components: Mapping[str, Tensor],
    ) -> Tensor | None:
        """Record a batch's total and components, on the device (no host read).

        Under ``"skip"`` with several processes, a training batch's "not finite" flag is
        summed over them (one ``all_reduce``, no host read), so that all drop the same steps.

        Args:
            stage: ``"train"``, ``"val"`` or ``"test"``.
            epoch: the current epoch.
            batch_idx: the batch's index within the epoch.
            total: the batch's loss.
            components: its components.

        Returns:
            Under ``"skip"``, a boolean device scalar: whether the batch may count in the
            epoch means; otherwise ``None``.
        """
        tensors = [total, *components.values()]
        values = _flat_values(tensors)
        sizes = None if values.shape[0] == len(tensors) else tuple(t.numel() for t in tensors)
        synced = self._decided_per_step(stage) and _world_size() > 1
        keep = None
        if self.skips:
            failed = values.isfinite().all().logical_not()
            if synced:  # every process must drop the same steps, or their weights diverge
                failed = failed.to(torch.float32)
                dist.all_reduce(failed, op=dist.ReduceOp.SUM)
                values = torch.cat([values.to(torch.float32), failed.reshape(1)])
            keep = failed == 0
        observation = _Observation(epoch, batch_idx, (TOTAL, *components), sizes, values, synced)
        pending = self._pending.setdefault(stage, [])
        pending.append(observation)
        if len(pending) >= MAX_PENDING and not self._decided_per_step(stage):
            self.check(stage)
        return keep

    def check(self, stage: str) -> None:
        """Read the batches of ``stage`` observed since the last check and apply the policy.

        Raises:
            NonFiniteLossError: under ``"raise"``, for a batch whose loss was not finite.
        """
        if self._decided_per_step(stage):
            return
        failed = self._read(stage)
        if not failed:
            return
        if self.policy == "raise":
            raise NonFiniteLossError(_raise_message(failed))
        if self.policy == "warn":
            warnings.warn(_warn_message(failed), NonFiniteLossWarning, stacklevel=2)
        else:
            self._dropped.setdefault(stage, []).extend(failed)

    def end_step(self) -> bool:
        """Under ``"skip"``: whether to drop this optimizer step (one host read).

        Reads the training batches since the last optimizer step (several with gradient
        accumulation); a non-finite loss in any of them on any process drops the step,
        counts it in :attr:`skipped_steps` and warns once (on the first process).
        """
        failed = self._read("train")
        if not failed:
            return False
        self.skipped_steps += 1
        if _rank() == 0:
            message = (
                f"on_nonfinite=skip: dropped the optimizer step of the {_where(failed)}; "
                f"parameters and optimizer state are unchanged "
                f"({self.skipped_steps} step(s) dropped so far)."
            )
            warnings.warn(message, NonFiniteLossWarning, stacklevel=2)
        return True

    def end_epoch(self, stage: str) -> int:
        """Check the epoch's last batches of ``stage``; under ``"skip"`` report those dropped.

        Returns:
            How many batches of ``stage`` this process left out of this epoch's means
            (validation and test under ``"skip"``; 0 otherwise).

        Raises:
            NonFiniteLossError: under ``"raise"``, for a batch whose loss was not finite.
        """
        self.check(stage)
        dropped = self._dropped.pop(stage, [])
        if dropped:
            warnings.warn(
                f"on_nonfinite=skip: left {len(dropped)} {_stage_word(stage)} batch(es) with a "
                f"non-finite loss out of the epoch means{_on_process()}, the first at "
                f"{dropped[0].describe()}.",
                NonFiniteLossWarning,
                stacklevel=2,
            )
        return len(dropped)

    def state_dict(self) -> dict[str, int]:
        """What a checkpoint keeps: the number of skipped steps."""
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Restore :meth:`state_dict`'s values (missing ones, from older checkpoints: 0)."""
        self.skipped_steps = int(state.get("skipped_steps", 0))

    def _decided_per_step(self, stage: str) -> bool:
        """Whether :meth:`end_step` reads this stage's batches (training under ``"skip"``)."""
        return self.skips and stage == "train"

    def _read(self, stage: str) -> list[NonFiniteBatch]:
        """The non-finite batches among those pending for ``stage`` (one host read)."""
        pending = self._pending.pop(stage, [])
        if not pending:
            return []
        flat = torch.cat([item.values for item in pending]).tolist()
        failed = []
        start = 0
        for item in pending:
            end = start + item.values.shape[0]
            chunk = flat[start:end]
            start = end
            if all(map(math.isfinite, chunk)) and not (item.synced and chunk[-1]):
                continue
            failed.append(_as_batch(stage, item, chunk))
        return failed


def drop_unless(
    keep: Tensor, components: Mapping[str, Tensor], counts: Mapping[str, Tensor | int]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A batch's components and counts for the epoch means, zeroed unless ``keep``.

    Zeroing both the value and its count leaves the batch out of a sample-weighted mean
    without reading ``keep`` on the host; a NaN value is replaced, not multiplied by 0.
    """
    values = {name: torch.where(keep, value.detach(), 0.0) for name, value in components.items()}
    weights = {name: torch.where(keep, count, 0) for name, count in counts.items()}
    return values, weights


def _flat_values(tensors: list[Tensor]) -> Tensor:
    """The tensors' values in one detached 1-d tensor: a single ``stack`` for scalars."""
    if all(tensor.ndim == 0 for tensor in tensors):
        return torch.stack(tensors).detach()
    return torch.cat([tensor.detach().reshape(-1) for tensor in tensors])


def _as_batch(stage: str, item: _Observation, flat: list[float]) -> NonFiniteBatch:
    """The non-finite values of one observation, from its part of the host copy."""
    values = {}
    start = 0
    sizes = item.sizes or (1,) * len(item.names)
    for name, size in zip(item.names, sizes, strict=True):
        bad = [value for value in flat[start : start + size] if not math.isfinite(value)]
        if bad:
            values[name] = bad[0]
        start += size
    processes = round(flat[-1]) if item.synced else None
    return NonFiniteBatch(stage, item.epoch, item.batch_idx, values, processes)


def _raise_message(failed: list[NonFiniteBatch]) -> str:
    return (
        f"Non-finite {_where(failed)}. on_nonfinite=raise stops here; set "
        "on_nonfinite=skip to drop such steps, or on_nonfinite=warn to go on. Usual causes: "
        "a learning rate too high, log(0) or a division by 0 on the loss inputs, NaN/inf in "
        "the data."
    )


def _warn_message(failed: list[NonFiniteBatch]) -> str:
    return f"Non-finite {_where(failed)}; on_nonfinite=warn goes on."


def _where(failed: list[NonFiniteBatch]) -> str:
    """``"training loss at epoch 0, batch 3: ... (and 2 later batch(es))"``.

    The process is named where the values are this process's own (not synchronised).
    """
    first = failed[0]
    later = f" (and {len(failed) - 1} later batch(es))" if len(failed) > 1 else ""
    process = _on_process() if first.processes is None else ""
    return f"{_stage_word(first.stage)} loss{process} at {first.describe()}{later}"


def _stage_word(stage: str) -> str:
    """``"training"`` for ``"train"``, and so on; another stage's name as it is."""
    return STAGE_WORDS.get(stage, stage)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _on_process() -> str:
    """``" on process 1 of 2"`` with several processes, else nothing."""
    return f" on process {_rank()} of {_world_size()}" if _world_size() > 1 else ""
