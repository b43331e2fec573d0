"""Composite losses: a weighted sum of named terms, each on its own part of the output.

- :mod:`~lossplug.composite.loss`: :class:`CompositeLoss`, its weights (fixed, scheduled or
  learned) and the total.
- :mod:`~lossplug.composite.routing`: :class:`Route`, which part of the output and target a
  term reads.
- :mod:`~lossplug.composite.fused`: :class:`FusedDiceCE`, a Dice and a cross-entropy term
  computed from one softmax.
"""

from lossplug.composite.loss import CompositeLoss
from lossplug.composite.routing import Route

__all__ = ["CompositeLoss", "Route"]
