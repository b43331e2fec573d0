"""The misuses each input space reveals, as :class:`Finding` objects with their messages.

A loss on logits, probabilities or log-probabilities is checked against the statistics of
its input (see :mod:`lossplug.input_checks.misuse` for the table of findings).
"""

from __future__ import annotations

from dataclasses import dataclass

from lossplug.input_checks.statistics import BatchStats, class_dim_of
from lossplug.input_checks.terms import Term, loss_name
from lossplug.losses.base import LossModule

#: the registered losses whose ``input`` option accepts probabilities.
PROBABILITY_LOSSES = ("bce", "dice", "generalized_dice", "lovasz_softmax", "tversky")
#: the fewest values a heuristic (every value in [0, 1]) needs to mean anything.
MIN_VALUES_FOR_HEURISTICS = 16


@dataclass(frozen=True)
class Finding:
    """One misuse of a loss: certain ones are errors, the others warnings."""

    certain: bool
    label: str
    text: str

    def message(self, where: str) -> str:
        """The message: the loss, where (the stage), then what was found and the fix."""
        return f"{self.label}{where}: {self.text}"


def find_misuses(term: Term, stats: BatchStats) -> list[Finding]:
    """The misuses of ``term``'s input space that ``stats`` show."""
    loss = term.loss
    ndim = len(stats.shape)
    if loss.class_dim is not None and not -ndim <= loss.class_dim < ndim:
        return []  # a shape the loss refuses itself, with its own message
    dim = class_dim_of(loss, stats.shape)
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
            f"remove the {squash} from your model: {loss_name(term.loss)} takes logits (the "
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


def _has_input_option(loss: LossModule) -> bool:
    """Whether ``loss`` has an ``input`` option (``"logits"`` or ``"probs"``)."""
    return isinstance(getattr(loss, "input", None), str)


def _words(names: tuple[str, ...]) -> str:
    """``a, b and c``."""
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]
