"""Loss weighting for :class:`~lossplug.CompositeLoss`: schedules and learned weights."""

from lossplug.weighting.aligned import AlignedMTL
from lossplug.weighting.base import LearnedWeighting
from lossplug.weighting.dwa import DynamicWeightAverage
from lossplug.weighting.famo import FAMOWeighting
from lossplug.weighting.schedules import Constant, Cosine, Linear, Step, WeightSchedule
from lossplug.weighting.uncertainty import UncertaintyWeighting

#: ``weighting=`` names of :class:`~lossplug.CompositeLoss`; ``"fixed"`` learns nothing.
WEIGHTINGS: dict[str, type[LearnedWeighting]] = {
    cls.name: cls for cls in (UncertaintyWeighting, DynamicWeightAverage, FAMOWeighting, AlignedMTL)
}

__all__ = [
    "AlignedMTL",
    "Constant",
    "Cosine",
    "DynamicWeightAverage",
    "FAMOWeighting",
    "LearnedWeighting",
    "Linear",
    "Step",
    "UncertaintyWeighting",
    "WeightSchedule",
]
