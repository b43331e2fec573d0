"""When a criterion's inputs are checked, and the classic misuses found when they are.

Value checks (class indices in range, targets in {0, 1}) read tensors on the host, which
stalls an accelerator once per call. Bad data almost always shows in the first batch, so by
default a stage checks its first batch and trusts the rest (``check_inputs="first"``;
``"always"`` checks every batch, ``"never"`` none).

On a checked batch :func:`detect_misuse` also looks at the prediction, term by term for a
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lossplug._validation import check_choice, value_checks
from lossplug.losses.base import LossModule

CHECK_MODES = ("first", "always", "never")
#: the registered losses whose ``input`` option accepts probabilities.
PROBABILITY_LOSSES = ("bce", "dice", "tversky")
#: the fewest values a heuristic (every value in [0, 1]) needs to mean anything.
MIN_VALUES_FOR_HEURISTICS = 16


class InputMisuseError(ValueError):
    """A prediction that cannot be what the loss takes, e.g. a softmax output for logits."""


class InputMisuseWarning(UserWarning):
    """A prediction that is probably not what the loss takes, e.g. only values in [0, 1]."""


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
    def batch(self, stage: str, criterion: LossModule, pred: Any, target: Any) -> Iterator[None]:
        """A block computing the criterion on one batch, with the checks on or off.

        On a checked batch :func:`detect_misuse` runs first, then the block with the loss's
        value checks on.

        Args:
            stage: ``"train"``, ``"val"`` or ``"test"``.
            criterion: the loss about to run.
            pred: its prediction.
            target: its target.

        Yields:
            Nothing.

        Raises:
            InputMisuseError: for a certain misuse (see the module docstring).
        """
        due = self.due(stage)
        if due:
            detect_misuse(criterion, pred, target, stage)
        with value_checks(due):
            yield


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
    terms = [term for term in named_terms(criterion, pred, target) if _is_floating(term.pred)]
    if any(term.pred.numel() == 0 for term in terms):
        _check_empty_batch(criterion, pred, target, where)
        return
    measured = list(zip(terms, BatchStats.measure(terms), strict=True))
    for term, stats in measured:
        _check_finite(term.label + where, stats)
    findings = [finding for term, stats in measured for finding in _findings(term, stats)]
    errors = [finding.message(where) for finding in findings if finding.certain]
    if errors:
        raise InputMisuseError("\n".join(errors))
    for finding in findings:
        warnings.warn(finding.message(where), InputMisuseWarning, stacklevel=2)


@dataclass(frozen=True)
class Term:
    """A loss and the input it receives, with its label in messages and its config path."""

    label: str
    path: str
    loss: LossModule
    pred: Any
    target: Any


def named_terms(
    criterion: LossModule, pred: Any, target: Any, label: str = "", path: str = "loss"
) -> Iterator[Term]:
    """The losses that receive a prediction: the criterion, or each term of a composite.

    A composite (a loss with a ``terms`` ``ModuleDict``) is opened, nested ones too; a term
    with a route (``routes[name].select``, see :class:`lossplug.CompositeLoss`) gets its part
    of the output and target.

    Args:
        criterion: a loss module.
        pred: its prediction.
        target: its target.
        label: how messages name ``criterion`` (default: its name).
        path: its config path, for the fixes a message suggests (``loss.terms.dice``).

    Yields:
        One :class:`Term` per loss that is not itself a composite.
    """
    label = label or _loss_name(criterion)
    terms = getattr(criterion, "terms", None)
    if not isinstance(terms, nn.ModuleDict):
        yield Term(label, path, criterion, pred, target)
        return
    routes = getattr(criterion, "routes", {})
    for key, term in terms.items():
        term_pred, term_target = pred, target
        if key in routes:
            term_pred, term_target = routes[key].select(criterion.name, key, pred, target)
        yield from named_terms(
            term,
            term_pred,
            term_target,
            f"{label} term {key!r} ({_loss_name(term)})",
            f"{path}.terms.{key}",
        )


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
                dims = sorted({_class_dim(term.loss, pred.shape) for term in members} - {None})
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


@dataclass(frozen=True)
class Finding:
    """One misuse of a loss: certain ones are errors, the others warnings."""

    certain: bool
    label: str
    text: str

    def message(self, where: str) -> str:
        """The message: the loss, where (the stage), then what was found and the fix."""
        return f"{self.label}{where}: {self.text}"


def _findings(term: Term, stats: BatchStats) -> list[Finding]:
    """The misuses of ``term``'s input space that ``stats`` show."""
    loss = term.loss
    ndim = len(stats.shape)
    if loss.class_dim is not None and not -ndim <= loss.class_dim < ndim:
        return []  # a shape the loss refuses itself, with its own message
    dim = _class_dim(loss, stats.shape)
    if loss.input_space == "logits":
        return _logits_findings(term, stats, dim)
    if loss.input_space == "probs":
        return _probs_findings(term, stats, dim)
    if loss.input_space == "log_probs":
        return _log_probs_findings(term, stats, dim)
    return []


def _logits_findings(term: Term, stats: BatchStats, dim: int | None) -> list[Finding]:
    """Probabilities given to a loss on logits."""
    if not stats.in_unit_interval:
        return []
    squash = "sigmoid" if term.loss.class_dim is None else "softmax"
    if _has_input_option(term.loss):
        fix = f"remove the {squash} from your model, or set {term.path}.input=probs"
    else:
        fix = (
            f"remove the {squash} from your model: {_loss_name(term.loss)} takes logits (the "
            f"losses that take probabilities are {_words(PROBABILITY_LOSSES)}, with input=probs)"
        )
    if stats.sums_to_one(dim):
        return [
            Finding(
                True,
                term.label,
                "expects logits, but 'pred' holds probabilities: every value is in "
                f"[0, 1] and every row sums to 1 along dim {dim} (a softmax output), so the "
                f"loss would apply a second softmax. Fix: {fix}",
            )
        ]
    if stats.numel < MIN_VALUES_FOR_HEURISTICS:
        return []
    return [
        Finding(
            False,
            term.label,
            "expects logits, but every value of 'pred' is in [0, 1] "
            f"({stats.describe_range()}): it looks like probabilities. Fix: {fix}",
        )
    ]


def _probs_findings(term: Term, stats: BatchStats, dim: int | None) -> list[Finding]:
    """Logits, or unnormalised scores, given to a loss on probabilities."""
    class_dim = term.loss.class_dim
    squash = "a sigmoid" if class_dim is None else f"a softmax over dim {class_dim}"
    switch = f", or set {term.path}.input=logits" if _has_input_option(term.loss) else ""
    if not 0.0 <= stats.lowest <= stats.highest <= 1.0:
        return [
            Finding(
                True,
                term.label,
                "expects probabilities, but 'pred' holds values outside [0, 1] "
                f"({stats.describe_range()}): it looks like logits. Fix: apply {squash} in "
                f"your model{switch}",
            )
        ]
    if dim is None or stats.sums_to_one(dim):
        return []
    return [
        Finding(
            False,
            term.label,
            f"expects probabilities summing to 1 along dim {dim}, but rows of "
            f"'pred' sum to values up to {stats.sum_error[dim]:.3g} away from 1 (a sigmoid "
            f"where a softmax belongs?). Fix: apply {squash} in your model{switch}",
        )
    ]


def _log_probs_findings(term: Term, stats: BatchStats, dim: int | None) -> list[Finding]:
    """Probabilities or logits given to a loss on log-probabilities (KL divergence)."""
    if stats.in_unit_interval and stats.sums_to_one(dim):
        return [
            Finding(
                True,
                term.label,
                "expects log-probabilities, but 'pred' holds probabilities: every "
                f"value is in [0, 1] and every row sums to 1 along dim {dim}. Fix: use "
                "log_softmax instead of softmax in your model (or take the log of the "
                "probabilities)",
            )
        ]
    if getattr(term.loss, "temperature", 1.0) != 1.0:
        return []  # pred is renormalised with log_softmax(pred / T): logits fit as well
    if stats.highest > stats.tolerance:
        return [
            Finding(
                True,
                term.label,
                "expects log-probabilities (<= 0), but 'pred' holds values up to "
                f"{stats.highest:.4g}: it looks like logits. Fix: apply log_softmax to the "
                "model's output",
            )
        ]
    if dim is None or stats.log_sum_error[dim] <= stats.tolerance:
        return []
    return [
        Finding(
            False,
            term.label,
            "expects log-probabilities, but exp('pred') does not sum to 1 along "
            f"dim {dim} (the log of a row sum is up to {stats.log_sum_error[dim]:.3g} away "
            f"from 0). Fix: apply log_softmax over dim {dim} to the model's output",
        )
    ]


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
    """Refuse an empty batch if the loss fails on it or gives NaN (most losses give 0)."""
    batch = "an empty batch"
    if isinstance(pred, Tensor):
        batch += f" ('pred' of shape {tuple(pred.shape)})"
    fix = "Fix: leave empty batches out (e.g. filter them in the data pipeline)"
    try:
        with torch.no_grad():
            value = criterion(pred, target)
    except (RuntimeError, IndexError) as error:
        raise InputMisuseError(
            f"{_loss_name(criterion)}{where}: cannot compute a loss on {batch}: {error}. {fix}"
        ) from error
    if isinstance(value, Tensor) and not bool(torch.isfinite(value).all()):
        raise InputMisuseError(
            f"{_loss_name(criterion)}{where}: {batch} gives a loss of {value.tolist()}, not a "
            f"number. {fix}"
        )


def _class_dim(loss: LossModule, shape: torch.Size | tuple[int, ...]) -> int | None:
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
    if _is_floating(tensor):
        return (~torch.isfinite(tensor.detach())).sum()
    return torch.zeros((), dtype=torch.long)


def _is_floating(tensor: Any) -> bool:
    """Whether ``tensor`` is a floating-point tensor."""
    return isinstance(tensor, Tensor) and tensor.is_floating_point()


def _has_input_option(loss: LossModule) -> bool:
    """Whether ``loss`` has an ``input`` option (``"logits"`` or ``"probs"``)."""
    return isinstance(getattr(loss, "input", None), str)


def _loss_name(loss: LossModule) -> str:
    """How messages name a loss: its registry name, or a wrapped callable's name."""
    return str(getattr(loss, "loss_name", loss.name))


def _words(names: tuple[str, ...]) -> str:
    """``a, b and c``."""
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]
