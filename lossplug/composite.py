r"""Composite losses: named terms with fixed weights, e.g. Dice + cross-entropy.

For terms :math:`L_i` with weights :math:`w_i \ge 0`

.. math::

    L = \sum_i w_i \, L_i(\hat y, y)

Each term is evaluated once; :meth:`CompositeLoss.components` returns the unweighted
:math:`L_i` by name (what is logged as ``{stage}/loss/{name}``) and the total is formed from
them by :meth:`CompositeLoss.total`, so logging the parts never costs a second forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from lossplug._validation import check_number
from lossplug.losses.base import LossModule, batch_count, sum_components
from lossplug.registry import build_loss, register_loss

LossLike = nn.Module | Callable[[Tensor, Tensor], Tensor]


@register_loss("composite")
class CompositeLoss(LossModule):
    """A weighted sum of named loss terms that all take the same ``(pred, target)``.

    Args:
        terms: ``{name: loss}``; each loss is a :class:`~lossplug.LossModule`, any
            ``nn.Module`` or a callable ``f(pred, target)`` (wrapped by
            :func:`lossplug.build_loss`). A term with several components of its own
            contributes their sum.
        weights: ``{name: weight}``, finite and ``>= 0``; names missing here weigh 1.

    Raises:
        ValueError: if there are no terms, a weight names no term, or a weight is negative
            or not finite.

    Example:
        >>> from lossplug.losses import L1Loss, MSELoss
        >>> loss = CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weights={"l1": 0.5})
    """

    name = "composite"
    input_space = "values"
    repr_options = ("weights",)

    def __init__(
        self, terms: Mapping[str, LossLike], weights: Mapping[str, float] | None = None
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError(f"{self.name}: option 'terms' must name at least one loss, got none")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(terms))
        if unknown:
            raise ValueError(
                f"{self.name}: option 'weights' names {unknown}, which are not terms; "
                f"the terms are {sorted(terms)}"
            )
        self.terms = nn.ModuleDict({name: build_loss(loss) for name, loss in terms.items()})
        self.weights = {
            name: check_number(self.name, f"weights.{name}", weights.get(name, 1.0), minimum=0.0)
            for name in terms
        }
        self.input_space = self._common_input_space()

    def _common_input_space(self) -> str:
        """The one input space the terms share; ``"values"`` terms accept any."""
        spaces = {name: term.input_space for name, term in self.terms.items()}
        specific = {space for space in spaces.values() if space != "values"}
        if len(specific) > 1:
            raise ValueError(
                f"{self.name}: every term receives the same 'pred', but the terms expect "
                f"different inputs: {spaces}"
            )
        return specific.pop() if specific else "values"

    def component_names(self) -> tuple[str, ...]:
        """The term names."""
        return tuple(self.terms)

    def components(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Each term's unweighted value, by name."""
        return {name: term(pred, target) for name, term in self.terms.items()}

    def measured_components(
        self, pred: Tensor, target: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """Each term's value and count (a term of several components counts samples)."""
        values: dict[str, Tensor] = {}
        counts: dict[str, Tensor | int] = {}
        for name, term in self.terms.items():
            parts, part_counts = term.measured_components(pred, target)
            values[name] = term.total(parts)
            single = len(part_counts) == 1
            counts[name] = next(iter(part_counts.values())) if single else batch_count(pred)
        return values, counts

    def total(self, components: Mapping[str, Tensor]) -> Tensor:
        """The weighted sum of the components :meth:`components` returned."""
        return sum_components(
            {name: self.weights[name] * value for name, value in components.items()}
        )

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The weighted sum of the terms."""
        return self.total(self.components(pred, target))
