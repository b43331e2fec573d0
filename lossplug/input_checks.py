"""When a criterion checks its input values: first batch of each stage, always, or never.

Value checks (class indices in range, targets in {0, 1}) read tensors on the host, which
stalls an accelerator once per call. Bad data almost always shows in the first batch, so by
default a stage checks its first batch and trusts the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor

from lossplug._validation import check_choice, value_checks
from lossplug.losses.base import LossModule

CHECK_MODES = ("first", "always", "never")


class InputChecks:
    """Decides, batch by batch, whether the criterion's value checks run.

    Args:
        mode: ``"first"`` (the first batch of each stage of each run), ``"always"`` or
            ``"never"``.

    Raises:
        ValueError: for another mode.
    """

    def __init__(self, mode: str) -> None:
        check_choice("LossPlugMixin", "check_inputs", mode, CHECK_MODES)
        self.mode = mode
        self._checked_stages: set[str] = set()

    def due(self, stage: str) -> bool:
        """Whether this batch of ``stage`` is checked; records that it was."""
        if self.mode == "first":
            due = stage not in self._checked_stages
            self._checked_stages.add(stage)
            return due
        return self.mode == "always"

    @contextmanager
    def batch(
        self, stage: str, criterion: LossModule, pred: Tensor, target: Tensor
    ) -> Iterator[None]:
        """A block computing the criterion on one batch, with value checks on or off.

        Args:
            stage: ``"train"``, ``"val"`` or ``"test"``.
            criterion: the loss about to run.
            pred: its prediction.
            target: its target.

        Yields:
            Nothing.
        """
        with value_checks(self.due(stage)):
            yield
