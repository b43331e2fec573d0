"""Composite losses: a weighted sum of named terms, each on its own part of the output.

- :mod:`~lossplug.composite.loss`: :class:`CompositeLoss`, its weights (fixed, scheduled or
  learned) and the total.
- :mod:`~lossplug.composite.routing`: :class:`Route`, which part of the output and target a
  term reads.
"""

from lossplug.composite.loss import CompositeLoss
from lossplug.composite.routing import Route

__all__ = ["CompositeLoss", "Route"]
