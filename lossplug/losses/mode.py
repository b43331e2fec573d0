"""``mode: auto``: a loss's mode decided from the first batch's shapes and dtypes, then kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor

#: the mode option's value that lets the first batch decide.
AUTO = "auto"
#: the ``mode`` option of a loss module with all three modes (command-line checks read it).
Mode = Literal["binary", "multiclass", "multilabel", "auto"]


def infer_mode(loss: str, pred: Tensor, target: Tensor, modes: Sequence[str]) -> str:
    """The mode that ``pred`` and ``target`` call for, among ``modes``.

    - ``"multiclass"``: an integer ``target`` with one dimension fewer than ``pred``, class
      indices ``(N, ...)`` for scores ``(N, C, ...)`` with ``C > 1``;
    - ``"binary"``: a ``target`` shaped like ``pred`` with one score per sample or pixel
      (``pred`` of shape ``(N,)`` or ``(N, 1, ...)``), or class indices for ``(N, 1, ...)``;
    - ``"multilabel"``: a ``target`` shaped like ``pred`` with several channels, where the
      loss has that mode (otherwise ``"binary"``, element by element).

    Args:
        loss: the loss's name, for the message.
        pred: the first batch's prediction.
        target: its target.
        modes: the loss's modes.

    Returns:
        The mode.

    Raises:
        ValueError: where the shapes fit none of the loss's modes; the message names the
            option to set.
    """
    channels = pred.shape[1] if pred.ndim > 1 else 1
    indices = not target.is_floating_point() and target.ndim == pred.ndim - 1 >= 1
    if indices and channels > 1 and "multiclass" in modes:
        return "multiclass"
    if target.shape == pred.shape or (indices and channels == 1):
        return "multilabel" if channels > 1 and "multilabel" in modes else "binary"
    raise ValueError(
        f"{loss}: mode 'auto' cannot tell the mode from pred of shape {tuple(pred.shape)} and "
        f"a {target.dtype} target of shape {tuple(target.shape)}: it takes class indices "
        "(N, ...) of an integer dtype for pred (N, C, ...), or a target shaped like pred. "
        f"Fix: set the loss's mode to one of {', '.join(map(repr, modes))}"
    )
