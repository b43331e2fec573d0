"""When a criterion's inputs are checked: the first batch of each stage, every batch or none.

Value checks (class indices in range, targets in {0, 1}) read tensors on the host, which
stalls an accelerator once per call. Bad data almost always shows in the first batch, so by
default a stage checks its first batch and trusts the rest (``check_inputs="first"``;
``"always"`` checks every batch, ``"never"`` none).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lossplug._validation import check_choice, value_checks
from lossplug.input_checks.misuse import detect_misuse
from lossplug.losses.base import LossModule

CHECK_MODES = ("first", "always", "never")


class InputChecks:
    """Decides, batch by batch, whether the criterion's inputs are checked.

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
        self, stage: str, criterion: LossModule, pred: Any, target: Any, key: str | None = None
    ) -> Iterator[None]:
        """A block computing the criterion on one batch, with the checks on or off.

        On a checked batch :func:`detect_misuse` runs first, then the block with the loss's
        value checks on.

        Args:
            stage: ``"train"``, ``"val"`` or ``"test"``.
            criterion: the loss about to run.
            pred: its prediction.
            target: its target.
            key: what "first" counts batches by; default ``stage`` (another key for each
                further criterion in a stage).

        Yields:
            Nothing.

        Raises:
            InputMisuseError: for a certain misuse (see :mod:`lossplug.input_checks.misuse`).
        """
        due = self.due(key or stage)
        if due:
            detect_misuse(criterion, pred, target, stage)
        with value_checks(due):
            yield
