"""The classic misuses of a loss, found on a checked batch: :func:`detect_misuse`.

On a checked batch (see :mod:`lossplug.input_checks.schedule`) :func:`detect_misuse` looks
at the prediction, term by term for a
composite loss, against what each loss declares it takes (its
:attr:`~lossplug.LossModule.input_space` and :attr:`~lossplug.LossModule.class_dim`), with
one host synchronisation for all of it. A finding that cannot be a coincidence is an
:class:`InputMisuseError` (a ``ValueError``); a heuristic one is an
:class:`InputMisuseWarning`:

======================================================================  =======
finding                                                                 level
======================================================================  =======
NaN or inf in ``pred`` (or in a floating ``target``)                    error
an empty batch the loss gives NaN for, or fails on                      error
logits loss: values in [0, 1] and every row sums to 1 (a softmax)       error
logits loss: every value in [0, 1], not all 0, at least 16 values       warning
probabilities loss: a value outside [0, 1] (logits)                     error
probabilities loss, softmax type: rows that do not sum to 1             warning
log-probabilities loss: values in [0, 1], rows summing to 1             error
log-probabilities loss: a value > 0 (logits; KL with temperature 1)     error
log-probabilities loss: exp(pred) rows that do not sum to 1             warning
======================================================================  =======

"Row" means the values along the loss's class dimension (dim 1 for ``(N, C, ...)``).
Every message names the loss (and the composite term), what it expected, what came, the
stage, and the fix, e.g. *"remove the softmax from your model, or set loss.input=probs"*.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from lossplug.input_checks.findings import find_misuses
from lossplug.input_checks.statistics import BatchStats, is_floating
from lossplug.input_checks.terms import loss_name, named_terms
from lossplug.losses.base import LossModule


class InputMisuseError(ValueError):
    """A prediction that cannot be what the loss takes, e.g. a softmax output for logits."""


class InputMisuseWarning(UserWarning):
    """A prediction that is probably not what the loss takes, e.g. only values in [0, 1]."""


def detect_misuse(criterion: LossModule, pred: Any, target: Any, stage: str | None = None) -> None:
    """Look at one batch for the classic misuses of ``criterion``: raise or warn.

    Each loss is checked on the input it receives: a composite's terms one by one (on their
    routes, where they have one). A ``pred`` that is no floating-point tensor is left to the
    loss's own checks, and so are shapes the loss refuses. All statistics are read with one
    host synchronisation; nothing is checked while ``torch.compile`` traces.

    Args:
        criterion: the loss.
        pred: the prediction the loss is about to get.
        target: its target.
        stage: the stage named in the messages, if any.

    Raises:
        InputMisuseError: for a certain misuse; every certain finding is in the message.

    Warns:
        InputMisuseWarning: for each likely misuse.
    """
    if torch.compiler.is_compiling():
        return
    where = f" (stage {stage!r})" if stage else ""
    terms = [term for term in named_terms(criterion, pred, target) if is_floating(term.pred)]
    for term in terms:
        term.loss.settle(term.pred, term.target)  # mode="auto": its class dimension is read
    if any(term.pred.numel() == 0 for term in terms):
        _check_empty_batch(criterion, pred, target, where)
        return
    measured = list(zip(terms, BatchStats.measure(terms), strict=True))
    for term, stats in measured:
        _check_finite(term.label + where, stats)
    findings = [finding for term, stats in measured for finding in find_misuses(term, stats)]
    errors = [finding.message(where) for finding in findings if finding.certain]
    if errors:
        raise InputMisuseError("\n".join(errors))
    for finding in findings:
        warnings.warn(finding.message(where), InputMisuseWarning, stacklevel=2)


def _check_finite(name: str, stats: BatchStats) -> None:
    """Refuse NaN or inf in ``pred`` or a floating ``target``: the loss would be NaN."""
    if stats.nonfinite_pred:
        raise InputMisuseError(
            f"{name}: 'pred' holds {stats.nonfinite_pred} NaN or infinite value(s) among its "
            f"{stats.numel}, so the loss would be NaN. Fix: look upstream of the loss, "
            "at the model and its input (a learning rate too high, a log of 0, a division by "
            "0, bad data)"
        )
    if stats.nonfinite_target:
        raise InputMisuseError(
            f"{name}: 'target' holds {stats.nonfinite_target} NaN or infinite value(s), so the "
            "loss would be NaN. Fix: clean the data (a missing target needs a finite "
            "placeholder, masked with a weight of 0)"
        )


def _check_empty_batch(criterion: LossModule, pred: Any, target: Any, where: str) -> None:
    """Refuse an empty batch if the loss fails on it or gives NaN (every lossplug loss gives 0)."""
    batch = "an empty batch"
    if isinstance(pred, Tensor):
        batch += f" ('pred' of shape {tuple(pred.shape)})"
    fix = "Fix: leave empty batches out (e.g. filter them in the data pipeline)"
    try:
        with torch.no_grad():
            value = criterion(pred, target)
    except (RuntimeError, IndexError) as error:
        raise InputMisuseError(
            f"{loss_name(criterion)}{where}: cannot compute a loss on {batch}: {error}. {fix}"
        ) from error
    if isinstance(value, Tensor) and not bool(torch.isfinite(value).all()):
        raise InputMisuseError(
            f"{loss_name(criterion)}{where}: {batch} gives a loss of {value.tolist()}, not a "
            f"number. {fix}"
        )
