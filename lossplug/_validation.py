"""Input and option checks shared by every loss.

Every error names the loss, the argument, what was expected and what came, so a user sees
``focal: option 'gamma' must be a finite number >= 0, got -1.0`` instead of a failure deep
inside torch.

Checks on tensor *metadata* (shape, dtype) are free and always run. Checks on tensor *values*
(class indices in range, targets in {0, 1}) read the tensor on the host, which costs a device
synchronisation; they run by default, are skipped inside ``torch.compile``, and can be turned
off with :func:`value_checks` once the data pipeline is trusted.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Literal

import torch
from torch import Tensor

from lossplug._transforms import wrapped_by_torch_func

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")

#: the integer dtypes class indices may come in (the losses convert them to int64)
CLASS_INDEX_DTYPES = frozenset(
    getattr(torch, name)
    for name in ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")
    if hasattr(torch, name)
)

_value_checks_enabled = True


@contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Turn the value checks (which synchronise with the device) on or off in a block.

    Args:
        enabled: whether losses may read tensor values to validate them.

    Yields:
        Nothing; the previous setting is restored on exit.
    """
    global _value_checks_enabled
    previous = _value_checks_enabled
    _value_checks_enabled = enabled
    try:
        yield
    finally:
        _value_checks_enabled = previous


def value_checks_apply(values: object) -> bool:
    """Whether the value checks may read ``values`` on the host now.

    Not when :func:`value_checks` turned them off; not while ``torch.compile`` traces (a host
    read would break the graph); and not for a tensor that a ``torch.func`` transform wraps,
    whose ``vmap`` refuses host reads of the values it batches (per-sample gradients:
    ``vmap(grad(loss))``).

    Args:
        values: the tensor (or option value) a check is about to read.
    """
    if not _value_checks_enabled or torch.compiler.is_compiling():
        return False
    return not (isinstance(values, Tensor) and wrapped_by_torch_func(values))


def check_reduction(loss: str, reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    """Validate a ``reduction`` option.

    Args:
        loss: the loss's name, used in the message.
        reduction: the value to check.
        allowed: the accepted values.

    Returns:
        The reduction, unchanged.

    Raises:
        ValueError: if ``reduction`` is not one of ``allowed``.
    """
    if reduction not in allowed:
        raise ValueError(
            f"{loss}: option 'reduction' must be one of {', '.join(map(repr, allowed))}, "
            f"got {reduction!r}"
        )
    return reduction


def check_choice(loss: str, option: str, value: object, allowed: tuple[object, ...]) -> None:
    """Validate that an option is one of a fixed set of values.

    Raises:
        ValueError: if ``value`` is not in ``allowed``.
    """
    if value not in allowed:
        raise ValueError(
            f"{loss}: option {option!r} must be one of {', '.join(map(repr, allowed))}, "
            f"got {value!r}"
        )


def check_bool(loss: str, option: str, value: object) -> bool:
    """Validate a switch: ``True`` or ``False`` (not ``0``, ``1`` or ``"true"``).

    Raises:
        TypeError: for any other value.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{loss}: option {option!r} must be a bool, got {value!r}")
    return value


def check_number(
    loss: str,
    option: str,
    value: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """Validate a scalar option: a real, finite number within bounds.

    Args:
        loss: the loss's name, used in the message.
        option: the option's name, used in the message.
        value: the value to check.
        minimum: the smallest allowed value, if any.
        maximum: the largest allowed value, if any.
        exclusive_minimum: whether ``minimum`` itself is excluded.
        exclusive_maximum: whether ``maximum`` itself is excluded.

    Returns:
        The value as a ``float``.

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it is NaN, infinite or out of bounds.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{loss}: option {option!r} must be a number, got {value!r}")
    too_small = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    too_large = maximum is not None and (value >= maximum if exclusive_maximum else value > maximum)
    # comparisons, not math.isfinite: torch.compile(dynamic=True) passes a float option as a
    # symbolic float, which it can compare (and guard on) but not hand to math.isfinite
    finite = -math.inf < value < math.inf  # False for NaN
    if finite and not too_small and not too_large:
        return float(value)
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>' if exclusive_minimum else '>='} {minimum}")
    if maximum is not None:
        bounds.append(f"{'<' if exclusive_maximum else '<='} {maximum}")
    expected = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    raise ValueError(f"{loss}: option {option!r} must be {expected}, got {value!r}")


def check_index_option(
    loss: str, option: str, value: object, *, optional: bool = False
) -> int | None:
    """Validate an integer option such as ``ignore_index``: an int (or NumPy integer), not a bool.

    Args:
        loss: the loss's name, used in the message.
        option: the option's name, used in the message.
        value: the value to check.
        optional: whether ``None`` is allowed.

    Returns:
        The value as an ``int`` (``None`` stays ``None``).

    Raises:
        TypeError: for anything else.
    """
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        try:
            return operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            pass
    expected = "an int or None" if optional else "an int"
    raise TypeError(f"{loss}: option {option!r} must be {expected}, got {value!r}")


def check_weight_tensor(
    loss: str, option: str, weight: Tensor | list[float] | tuple[float, ...] | None
) -> Tensor | None:
    """Validate a 1-D tensor of non-negative, finite weights (class weights, per-class alpha).

    Args:
        loss: the loss's name, used in the message.
        option: the option's name, used in the message.
        weight: a sequence or tensor of weights, or ``None``.

    Returns:
        The weights as a float tensor, or ``None``.

    Raises:
        ValueError: if the weights are not 1-D, not finite, or negative.
    """
    if weight is None:
        return None
    tensor = torch.as_tensor(weight, dtype=torch.get_default_dtype())
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise ValueError(
            f"{loss}: option {option!r} must be a non-empty 1-D sequence of per-class values, "
            f"got shape {tuple(tensor.shape)}"
        )
    if not bool(torch.isfinite(tensor).all()) or bool((tensor < 0).any()):
        raise ValueError(
            f"{loss}: option {option!r} must hold finite values >= 0, got {tensor.tolist()}"
        )
    return tensor


def check_floating(loss: str, name: str, tensor: Tensor, meaning: str) -> None:
    """Require a floating-point tensor.

    Args:
        loss: the loss's name.
        name: the argument's name (``pred``, ``target``, ``embeddings``).
        tensor: the argument.
        meaning: what the tensor should hold, e.g. ``"logits"``.

    Raises:
        TypeError: if ``tensor`` is not a floating-point tensor.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{loss}: {name!r} must be a torch.Tensor of {meaning}, got {tensor!r}")
    if not tensor.is_floating_point():
        raise TypeError(
            f"{loss}: {name!r} must be a floating-point tensor of {meaning}, got {tensor.dtype}"
        )


def check_same_shape(loss: str, pred: Tensor, target: Tensor, mode: str | None = None) -> None:
    """Require ``pred`` and ``target`` to have the same shape (no silent broadcasting).

    Args:
        loss: the loss's name.
        pred: the prediction.
        target: the target.
        mode: the loss's ``mode`` option, where it is the one that asks for equal shapes: the
            message then names the mode that takes class indices.

    Raises:
        ValueError: if the shapes differ.
    """
    if pred.shape == target.shape:
        return
    fix = ""
    if mode is not None and target.ndim == pred.ndim - 1:
        fix = (
            f"; mode {mode!r} takes a target shaped like pred, and class indices (N, ...) for "
            "pred (N, C, ...) need mode 'multiclass'. Fix: set the loss's mode to 'multiclass' "
            "or 'auto' (decided from the first batch)"
        )
    raise ValueError(
        f"{loss}: 'pred' and 'target' must have the same shape, got pred "
        f"{tuple(pred.shape)} and target {tuple(target.shape)}{fix}"
    )


def check_min_dims(loss: str, name: str, tensor: Tensor, ndim: int, layout: str) -> None:
    """Require at least ``ndim`` dimensions.

    Raises:
        ValueError: if ``tensor`` has fewer dimensions.
    """
    if tensor.ndim < ndim:
        raise ValueError(
            f"{loss}: {name!r} must have shape {layout}, got shape {tuple(tensor.shape)}"
        )


def check_binary_values(loss: str, target: Tensor, kind: str, ignore_index: int | None) -> None:
    """Require a target of 0s and 1s (and ``ignore_index``), as a value check.

    Args:
        loss: the loss's name.
        target: the target.
        kind: what the target is, for the message (``"binary"``, ``"multilabel"``).
        ignore_index: a target value that is skipped, if any.

    Raises:
        ValueError: naming the first value that is neither.
    """
    if target.numel() == 0 or not value_checks_apply(target):
        return
    allowed = (target == 0) | (target == 1)
    if ignore_index is not None:
        allowed |= target == ignore_index
    if not bool(allowed.all()):
        bad = target[~allowed][0].item()
        ignored = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        raise ValueError(
            f"{loss}: {kind} 'target' must hold values in {{0, 1}}{ignored}, got a value {bad}"
        )


def check_class_target(
    loss: str,
    pred: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    indexed_by_torch: bool = False,
) -> None:
    """Check class-index targets against class-score predictions of shape ``(N, C, *)``.

    Args:
        loss: the loss's name.
        pred: scores of shape ``(N, C, d1, ...)``.
        target: class indices of shape ``(N, d1, ...)``.
        ignore_index: a target value that is skipped, if any.
        indexed_by_torch: the caller indexes with ``target`` inside
            :func:`explain_class_target_errors`; where torch's kernels refuse an index out of
            ``[0, C)`` themselves (:func:`class_indices_checked_by_torch`) the pass over the
            values is then left to them.

    Raises:
        TypeError: if ``target`` is not an integer tensor.
        ValueError: if the shapes do not match or an index is out of ``[0, C)``.
    """
    if target.dtype not in CLASS_INDEX_DTYPES:
        raise TypeError(
            f"{loss}: class-index 'target' must be an integer tensor (torch.long), got "
            f"{target.dtype}; for one-hot or soft targets pass a float tensor shaped like 'pred'"
        )
    check_min_dims(loss, "pred", pred, 2, "(N, C, ...) of class scores")
    expected = pred.shape[:1] + pred.shape[2:]
    if target.shape != expected:
        raise ValueError(
            f"{loss}: class-index 'target' must have shape {tuple(expected)} for pred of shape "
            f"{tuple(pred.shape)} (N, C, ...), got {tuple(target.shape)}"
        )
    if indexed_by_torch and class_indices_checked_by_torch(pred):
        return
    if target.numel() == 0 or not value_checks_apply(target):
        return
    num_classes = pred.shape[1]
    # one pass (aminmax) and one host sync in the common case; a second look without the
    # ignored positions only when their value lies outside [0, C)
    lowest, highest = torch.stack(torch.aminmax(target)).tolist()
    if lowest >= 0 and highest < num_classes:
        return
    if ignore_index is not None:
        kept = target.masked_fill(target == ignore_index, 0)
        lowest, highest = torch.stack(torch.aminmax(kept)).tolist()
        if lowest >= 0 and highest < num_classes:
            return
    out_of_range = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        out_of_range &= target != ignore_index
    bad = target[out_of_range][0].item()
    ignored = f" (ignore_index={ignore_index})" if ignore_index is not None else ""
    raise ValueError(
        f"{loss}: class index {bad} in 'target' is out of range for {num_classes} classes; "
        f"expected values in [0, {num_classes - 1}]{ignored}"
    )


def class_indices_checked_by_torch(pred: Tensor) -> bool:
    """Whether torch's kernels refuse class indices out of range for ``pred`` themselves.

    True on the CPU outside ``torch.compile``: there the gather/scatter and NLL kernels raise
    on an index outside ``[0, C)``, so a loss can skip its own pass over the target (and the
    host read it needs) and explain torch's error instead (:func:`explain_class_target_errors`).
    On CUDA an index out of range is a device-side assert that kills the process, so targets
    are checked first there.
    """
    return pred.is_cpu and not torch.compiler.is_compiling()


class explain_class_target_errors:  # lower case like contextlib.suppress and torch.no_grad
    """Run a block that indexes with ``target``; replace torch's refusal by lossplug's message.

    A small class rather than a ``contextlib.contextmanager`` generator: it wraps every call of
    the class-index losses, and costs a few µs less per call.

    Args:
        loss: the loss's name.
        pred: class scores ``(N, C, *)``.
        target: the class indices the block uses.
        ignore_index: a target value that is skipped, if any.

    Raises:
        ValueError: naming the loss and the offending index, when torch refused ``target``.
    """

    __slots__ = ("_ignore_index", "_loss", "_pred", "_target")

    def __init__(
        self, loss: str, pred: Tensor, target: Tensor, ignore_index: int | None = None
    ) -> None:
        self._loss, self._pred, self._target = loss, pred, target
        self._ignore_index = ignore_index

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if not isinstance(error, (IndexError, RuntimeError, ValueError)):
            return False
        clear = _class_target_error(self._loss, self._pred, self._target, self._ignore_index)
        if clear is None:
            return False
        raise clear from error


def _class_target_error(
    loss: str, pred: Tensor, target: Tensor, ignore_index: int | None
) -> Exception | None:
    """The clear error for a bad ``target``; ``None`` if it passes or cannot be checked here.

    The check reads the target on the host, which fails under ``torch.func.vmap`` for one:
    torch's original error is then the one to show. It runs whether or not value checks are
    on: torch has already refused the batch, so the host read costs nothing that matters.
    """
    try:
        with value_checks(True):
            check_class_target(loss, pred, target, ignore_index)
    except (TypeError, ValueError) as clear:
        return clear
    except Exception:  # the check cannot run here: torch's error stands
        return None
    return None


def check_unit_interval(loss: str, name: str, tensor: Tensor, meaning: str) -> None:
    """Require values in [0, 1] (probabilities, binary targets); a value check.

    Raises:
        ValueError: if a value is outside [0, 1] or NaN.
    """
    if tensor.numel() == 0 or not value_checks_apply(tensor):
        return
    if _bit_patterns_in_unit_interval(tensor):
        return
    outside = ~((tensor >= 0) & (tensor <= 1))  # NaN fails both comparisons
    if bool(outside.any()):  # else only -0.0 failed the quick test
        bad = tensor[outside][0].item()
        raise ValueError(f"{loss}: {name!r} must hold {meaning} in [0, 1], got a value {bad}")


#: the signed integer type of each float type's width, and the bit pattern of 1.0 in it.
_FLOAT_BITS = {
    torch.float64: (torch.int64, 0x3FF0_0000_0000_0000),
    torch.float32: (torch.int32, 0x3F80_0000),
    torch.float16: (torch.int16, 0x3C00),
    torch.bfloat16: (torch.int16, 0x3F80),
}


def _bit_patterns_in_unit_interval(tensor: Tensor) -> bool:
    """Whether every value lies in [0, 1] (-0.0 aside), from one pass and one host read.

    IEEE-754 orders non-negative floats as their bit patterns read as signed integers; a
    negative float (sign bit set) reads as a negative integer, NaN and values above 1 as
    integers above 1.0's pattern. Integer ``aminmax`` is about twice as fast as the float one,
    which must also look for NaN.
    """
    integer, one = _FLOAT_BITS.get(tensor.dtype, (None, 0))
    if integer is None:
        lowest, highest = torch.stack(torch.aminmax(tensor)).tolist()
        return lowest >= 0 and highest <= 1
    lowest, highest = torch.stack(torch.aminmax(tensor.view(integer))).tolist()
    return lowest >= 0 and highest <= one
