"""The fused Dice + cross-entropy path of :class:`~lossplug.CompositeLoss`.

When a composite holds a plain multiclass Dice term and a plain cross-entropy term on the
same logits, :class:`FusedDiceCE` computes both from one softmax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from lossplug.composite.routing import Route
from lossplug.functional.classification import kept_target_weight
from lossplug.functional.overlap import dice_ce_components
from lossplug.losses.base import batch_count
from lossplug.losses.classification import CrossEntropyLoss
from lossplug.losses.overlap import DiceLoss


@dataclasses.dataclass(frozen=True)
class FusedDiceCE:
    """A Dice term and a cross-entropy term computed from one softmax.

    :func:`lossplug.functional.overlap.dice_ce_components` gives both values from one
    softmax and one backward through it, instead of one each. It is used when the terms are
    exactly lossplug's :class:`~lossplug.losses.DiceLoss` (multiclass, logits, mean, not
    Jaccard, no class weights) and :class:`~lossplug.losses.CrossEntropyLoss` (mean, no
    class weights or label smoothing) on the same route without activation, ignoring the
    same index (Dice's ``None`` matches cross-entropy's default -100, which a valid target
    never holds), and the target holds class indices; otherwise each term runs on its own.
    """

    dice: str
    ce: str
    options: Mapping[str, Any]

    @classmethod
    def find(cls, terms: nn.ModuleDict, routes: Mapping[str, Route]) -> FusedDiceCE | None:
        """The fusable pair among ``terms``, if there is one."""
        dice = [name for name, term in terms.items() if _fusable_dice(term)]
        ce = [name for name, term in terms.items() if _fusable_ce(term)]
        for dice_name, ce_name in ((d, c) for d in dice for c in ce):
            dice_term, ce_term = terms[dice_name], terms[ce_name]
            ignore = dice_term.ignore_index
            same_ignore = ignore == ce_term.ignore_index or (
                ignore is None and ce_term.ignore_index == -100
            )
            route = routes[dice_name]
            if same_ignore and route == routes[ce_name] and route.activation is None:
                options = {
                    "smooth_nr": dice_term.smooth_nr,
                    "smooth_dr": dice_term.smooth_dr,
                    "batch": dice_term.batch,
                    "include_background": dice_term.include_background,
                    "ignore_index": ignore,
                }
                return cls(dice_name, ce_name, options)
        return None

    def values(self, pred: Tensor, target: Tensor) -> dict[str, Tensor] | None:
        """Both values, by term name, or ``None`` for a target of probabilities."""
        if not isinstance(target, Tensor) or target.is_floating_point():
            return None
        values = dice_ce_components(pred, target, **self.options)
        return {self.dice: values["dice"], self.ce: values["ce"]}

    def measured(
        self, pred: Tensor, target: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]] | None:
        """Both values and their counts (a pass over the target), or ``None`` as :meth:`values`."""
        values = self.values(pred, target)
        if values is None:
            return None
        ignore = self.options["ignore_index"]
        ce_count = kept_target_weight(target, -100 if ignore is None else ignore)
        return values, {self.dice: batch_count(pred), self.ce: ce_count}


def _fusable_dice(term: nn.Module) -> bool:
    return (
        type(term) is DiceLoss
        and (term.mode, term.input, term.reduction) == ("multiclass", "logits", "mean")
        and not term.jaccard
        and term.weight is None
    )


def _fusable_ce(term: nn.Module) -> bool:
    return (
        type(term) is CrossEntropyLoss
        and term.reduction == "mean"
        and term.weight is None
        and term.label_smoothing == 0
    )
