"""When a fast kernel replaces the plain computation: one table, one switch.

Every loss in :mod:`lossplug.functional` is written in ordinary autograd; that version is the
definition, the one a contributor edits and the one every kernel is tested against. A kernel
(a hand-written backward pass) takes over only where :func:`applies` says so: kernels are on
(:func:`enabled`), the call runs eagerly (``torch.compile`` fuses the plain version itself),
on a device the kernel was measured on, with at least the table's number of elements, and
with no forward-mode tangent.

Turn every kernel off with the environment variable ``LOSSPLUG_KERNELS=0`` (read at each
call) or, for a block of code, ``with lossplug.kernels.disabled(): ...``; values and gradients
stay the same to rounding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor
from torch.autograd import forward_ad


@dataclass(frozen=True)
class Threshold:
    """Where a kernel applies: from a size of ``minimum`` on ``devices``.

    The size is counted in elements, or positions where the kernel says so.
    """

    minimum: int
    devices: tuple[str, ...]


#: The one table of thresholds, measured side by side with the plain version by
#: ``python -m benchmarks.bench_kernels`` (a kernel below its threshold costs more than it saves).
#: Sizes are the logits' elements.
THRESHOLDS: Final[dict[str, Threshold]] = {
    "cross_entropy": Threshold(2**17, ("cpu",)),
    "poly1_cross_entropy": Threshold(2**17, ("cpu",)),
    "softmax_statistics": Threshold(0, ("cpu", "cuda")),
    "sigmoid_focal": Threshold(0, ("cpu", "cuda")),
    "multiclass_hinge": Threshold(0, ("cpu", "cuda")),
    "linear_in_target": Threshold(0, ("cpu", "cuda")),
    # and only where class_softmax.takes_large_path: from 32768 positions of (N, C, S) logits
    "target_cross_entropy": Threshold(0, ("cpu",)),
}

_switched_off: list[bool] = []


def enabled() -> bool:
    """Whether kernels may run: not inside :func:`disabled`, and ``LOSSPLUG_KERNELS`` is not 0."""
    return not _switched_off and os.environ.get("LOSSPLUG_KERNELS", "1") != "0"


@contextmanager
def disabled() -> Iterator[None]:
    """A block in which every loss runs its plain autograd version.

    Example:
        >>> import torch
        >>> from lossplug import functional as LF, kernels
        >>> logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
        >>> with kernels.disabled():
        ...     plain = LF.focal(logits, labels, mode="multiclass")
        >>> torch.allclose(plain, LF.focal(logits, labels, mode="multiclass"))
        True
    """
    _switched_off.append(True)
    try:
        yield
    finally:
        _switched_off.pop()


def applies(kernel: str, tensor: Tensor, size: int | None = None) -> bool:
    """Whether ``kernel`` (a key of :data:`THRESHOLDS`) takes over for the input ``tensor``.

    Args:
        kernel: the kernel's name in :data:`THRESHOLDS`.
        tensor: the input it would replace the plain computation for.
        size: the size the threshold is compared with (default: ``tensor.numel()``).

    Returns:
        True where the kernel runs.
    """
    threshold = THRESHOLDS[kernel]
    return (
        enabled()
        and not torch.compiler.is_compiling()
        and tensor.device.type in threshold.devices
        and (tensor.numel() if size is None else size) >= threshold.minimum
        and forward_ad.unpack_dual(tensor).tangent is None
    )
