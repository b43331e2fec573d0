"""Fast kernels: hand-written backward passes that replace a loss's plain autograd version.

Each kernel computes exactly what its loss in :mod:`lossplug.functional` defines, with less
memory traffic; the tests hold every kernel to the plain version (values and gradients,
float32 and float64, on both sides of its threshold). :mod:`lossplug.kernels.dispatch` decides
where a kernel runs; ``LOSSPLUG_KERNELS=0`` or :func:`disabled` turns them all off.
"""

from lossplug.kernels.dispatch import THRESHOLDS, applies, disabled, enabled

__all__ = ["THRESHOLDS", "applies", "disabled", "enabled"]
