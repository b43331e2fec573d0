"""The base class every lossplug loss module derives from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from lossplug._validation import check_reduction
from lossplug.losses.mode import AUTO, infer_mode

InputSpace = Literal["logits", "probs", "log_probs", "values", "scores", "embeddings"]


class LossModule(nn.Module):
    """A loss as an ``nn.Module``: ``loss(pred, target)`` plus named components.

    Subclasses set :attr:`name` (the registry name, also the single component's name) and
    :attr:`input_space` (what ``pred`` must hold), and implement :meth:`forward`.
    Losses made of several terms override :meth:`components` and inherit
    :class:`MultiTermLoss`, whose ``forward`` adds the terms up, so the total and the logged
    parts come from a single computation.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``, as in ``torch.nn``.
    """

    name: ClassVar[str] = "loss"
    input_space: InputSpace = "values"
    #: the dimension of ``pred`` holding the classes, along which probabilities sum to 1 (a
    #: softmax); ``None`` where every element is a probability of its own (a sigmoid). The
    #: input checks (:mod:`lossplug.input_checks`) read it to recognise misplaced softmaxes.
    class_dim: int | None = 1
    #: attribute names shown in ``repr(loss)`` besides ``reduction``.
    repr_options: ClassVar[tuple[str, ...]] = ()
    #: the values of a ``mode`` option, for a loss that has one; ``"auto"`` is also taken.
    modes: ClassVar[tuple[str, ...]] = ()
    #: whether each component is counted over items of its own (contrastive's positive and
    #: negative pairs, a composite's terms) rather than all over the same ones; see
    #: :meth:`count_groups`.
    separate_counts: ClassVar[bool] = False

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(self.name, reduction)

    def components(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Named, unweighted loss terms; :meth:`total` forms the loss from them.

        Args:
            pred: the model's output, in this loss's :attr:`input_space`.
            target: the target.

        Returns:
            ``{name: value}``; a single-term loss has one entry named after the loss.
        """
        return {self.name: self(pred, target)}

    def settle(self, pred: Any, target: Any) -> None:
        """Decide ``mode="auto"`` from the first batch's shapes and dtypes, and keep it.

        A loss with a ``mode`` calls this at the start of ``forward``; the input checks call
        it before they read :attr:`class_dim`. See :func:`lossplug.losses.mode.infer_mode`.
        """
        undecided = self.modes and getattr(self, "mode", None) == AUTO
        if undecided and isinstance(pred, Tensor) and isinstance(target, Tensor):
            self.mode = infer_mode(self.name, pred, target, self.modes)

    def component_names(self) -> tuple[str, ...] | None:
        """The names :meth:`components` returns, known before any batch (for logging).

        ``None`` for a subclass that overrides :meth:`components` without overriding this:
        its names are then learned from the first batch.
        """
        if type(self).components is not LossModule.components:
            return None
        return (self.name,)

    def model_term_names(self) -> tuple[str, ...]:
        """Names of terms the model computes itself, which :meth:`total` also takes.

        None by default; :class:`lossplug.CompositeLoss` declares them with ``model_terms``.
        """
        return ()

    def measured_components(
        self, pred: Any, target: Any
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """:meth:`components`, and how many items each one's mean was taken over.

        The counts are each component's weight in an epoch mean: with them, averaging batch
        means gives the exact mean over every item of the epoch, however uneven the batches.
        By default every component averages over the batch's samples; losses whose mean
        skips items (``ignore_index``) or runs over pairs override this.

        Returns:
            ``(components, counts)``, both keyed by component name.
        """
        components = self.components(pred, target)
        return components, dict.fromkeys(components, batch_count(pred))

    def count_groups(self, names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        """The components counted over the same items in every batch, grouped.

        Components of one group share one count in every batch (the counts of
        :meth:`measured_components`), so the mean over many batches of each is their summed
        values over one summed count. ``normalize_loss="global"``
        (:mod:`lossplug.normalize`) keeps a gradient per group. By default every component
        is one group; with :attr:`separate_counts` each is a group of its own.

        Args:
            names: the components' names, as the counts of a batch are keyed.

        Returns:
            A partition of ``names``, in their order.
        """
        if self.separate_counts:
            return tuple((name,) for name in names)
        return (tuple(names),)

    def total(self, components: Mapping[str, Tensor]) -> Tensor:
        """The loss from the values :meth:`components` returned: the sum of :meth:`weighted_terms`.

        Losses that weigh their terms override :meth:`weighted_terms`; callers that log the
        components use this to form the total without a second forward pass.
        """
        return sum_components(self.weighted_terms(components))

    def weighted_terms(self, components: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each component times its current weight (here 1): the parts the total adds up.

        Gradient diagnostics differentiate these one by one. A loss whose total adds a term
        that is no component (the regulariser of learned weights) leaves it out here.
        """
        return dict(components)

    def varying_weights(self) -> dict[str, Tensor]:
        """The current value of every weight that is not constant, by component name.

        Logged as ``{stage}/loss_weight/{name}``; empty for a loss without such weights.
        """
        return {}

    def set_progress(self, epoch: int, step: int) -> None:
        """Tell weights that follow a schedule where training is; nothing by default.

        Args:
            epoch: the current epoch (from 0).
            step: the number of optimizer steps taken so far.
        """

    def end_epoch(self, epoch_means: Mapping[str, Tensor]) -> None:
        """Hand weights that adapt per epoch the training epoch's means; nothing by default.

        Args:
            epoch_means: each component's exact mean over the epoch and every process (the
                same values on every process).
        """

    def extra_repr(self) -> str:
        """The options, as ``repr`` shows them."""
        names = (*self.repr_options, "reduction")
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in names)


class MultiTermLoss(LossModule):
    """A loss whose value is :meth:`total` of the terms :meth:`components` returns."""

    def components(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Named terms; subclasses must implement this."""
        raise NotImplementedError

    def forward(self, pred: Any, target: Any) -> Tensor:
        """The total of the components."""
        return self.total(self.components(pred, target))


def batch_count(pred: Any) -> int:
    """The number of samples in a batch: the first dimension of its first tensor.

    ``pred`` may be a tensor or a dict, tuple or list of them (a multi-head output); a scalar,
    or a value holding no tensor, counts as 1.
    """
    if isinstance(pred, Mapping):
        return batch_count(next(iter(pred.values()), None))
    if isinstance(pred, (tuple, list)):
        return batch_count(pred[0]) if pred else 1
    if isinstance(pred, Tensor) and pred.ndim:
        return pred.shape[0]
    return 1


def kept_count(target: Tensor, ignore_index: int | None) -> Tensor | int:
    """The number of elements of ``target`` that are not ``ignore_index`` (all without one).

    The count of an element-wise loss's mean, for :meth:`LossModule.measured_components`.
    """
    if ignore_index is None:
        return target.numel()
    return (target != ignore_index).sum()


def sum_components(components: Mapping[str, Tensor]) -> Tensor:
    """Add named terms up into the total loss.

    Args:
        components: a non-empty mapping of name to loss tensor.

    Returns:
        The element-wise sum of the values.
    """
    values = iter(components.values())
    total = next(values)
    for value in values:
        total = total + value
    return total
