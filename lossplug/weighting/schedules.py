r"""Loss-weight schedules: a term's weight as a pure function of training progress.

A schedule maps a position :math:`x` — the epoch (from 0) or the number of optimizer steps
taken, per its ``unit`` — to a weight :math:`w(x) \ge 0`. Being a pure function of
progress, a resumed run (Lightning restores the epoch and the global step) continues exactly
where it stopped. With :math:`t = \operatorname{clip}((x - b) / (e - b), 0, 1)` for a
schedule that begins at :math:`b` and ends at :math:`e`:

.. math::

    w_\text{linear}(x) = w_0 + (w_1 - w_0)\, t, \qquad
    w_\text{cosine}(x) = w_0 + (w_1 - w_0)\, \tfrac12 \left(1 - \cos \pi t\right),

so both hold ``initial`` up to ``begin`` and ``final`` from ``end`` on. ``step`` holds
``initial`` until the first milestone, then ``values[j]`` from ``milestones[j]`` on.

In a config a plain number is a constant weight; a mapping names a schedule and its options::

    weights:
      ce: 1.0
      dice: {schedule: linear, initial: 0.0, final: 1.0, begin: 0, end: 5, unit: epoch}
      aux: {schedule: step, initial: 1.0, milestones: [3, 6], values: [0.5, 0.1]}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import ClassVar

from lossplug._validation import check_choice, check_number

UNITS: tuple[str, ...] = ("epoch", "step")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightSchedule:
    """A weight as a function of the epoch or the step; subclasses define :meth:`at`.

    Args:
        unit: ``"epoch"`` (the weight changes between epochs) or ``"step"`` (between
            optimizer steps).
    """

    kind: ClassVar[str]
    unit: str = "epoch"

    def __call__(self, epoch: int, step: int) -> float:
        """The weight at an epoch (from 0) and a number of optimizer steps taken."""
        return self.at(epoch if self.unit == "epoch" else step)

    def at(self, position: float) -> float:
        """The weight at ``position``, in units of :attr:`unit`."""
        raise NotImplementedError

    @property
    def is_constant(self) -> bool:
        """Whether the weight never changes (it is then not logged)."""
        return False

    def check(self, owner: str, option: str) -> None:
        """Validate the options; messages name ``owner`` and ``option`` (``weights.dice``).

        Raises:
            ValueError: for an unknown unit, a negative or non-finite value, or a schedule
                that does not end after it starts.
            TypeError: for an option that is not a number.
        """
        check_choice(owner, f"{option}.unit", self.unit, UNITS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Constant(WeightSchedule):
    """The same weight throughout.

    Args:
        value: the weight, finite and >= 0.
    """

    kind: ClassVar[str] = "constant"
    value: float

    def at(self, position: float) -> float:
        """:attr:`value`, wherever training is."""
        return self.value

    @property
    def is_constant(self) -> bool:
        """Always true."""
        return True

    def check(self, owner: str, option: str) -> None:
        """Validate ``value``."""
        super().check(owner, option)
        check_number(owner, f"{option}.value", self.value, minimum=0.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Ramp(WeightSchedule):
    """From ``initial`` at ``begin`` to ``final`` at ``end``; subclasses shape the way."""

    initial: float
    final: float
    begin: float = 0
    end: float

    def at(self, position: float) -> float:
        """The weight ``initial + (final - initial) * shape(t)`` with ``t`` clipped to [0, 1]."""
        fraction = min(max((position - self.begin) / (self.end - self.begin), 0.0), 1.0)
        return self.initial + (self.final - self.initial) * self.shape(fraction)

    def shape(self, fraction: float) -> float:
        """How far the weight has come, from 0 at ``begin`` to 1 at ``end``."""
        raise NotImplementedError

    def check(self, owner: str, option: str) -> None:
        """Validate the values and that the ramp ends after it starts."""
        super().check(owner, option)
        for name in ("initial", "final", "begin", "end"):
            check_number(owner, f"{option}.{name}", getattr(self, name), minimum=0.0)
        if self.end <= self.begin:
            raise ValueError(
                f"{owner}: option {option!r}: the {self.kind} schedule must end after it "
                f"starts, got begin={self.begin!r} and end={self.end!r} ({self.unit}s)"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Linear(_Ramp):
    """A straight line from ``initial`` to ``final`` (a warm-up or a decay).

    Args:
        initial: the weight up to ``begin``.
        final: the weight from ``end`` on.
        begin: where the ramp starts (default 0).
        end: where it ends, after ``begin``.
        unit: ``"epoch"`` or ``"step"``.
    """

    kind: ClassVar[str] = "linear"

    def shape(self, fraction: float) -> float:
        """The fraction itself."""
        return fraction


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cosine(_Ramp):
    r"""Half a cosine from ``initial`` to ``final``: :math:`\tfrac12(1 - \cos \pi t)`.

    Args:
        initial: the weight up to ``begin``.
        final: the weight from ``end`` on.
        begin: where the ramp starts (default 0).
        end: where it ends, after ``begin``.
        unit: ``"epoch"`` or ``"step"``.
    """

    kind: ClassVar[str] = "cosine"

    def shape(self, fraction: float) -> float:
        """Slow at both ends, fastest half-way."""
        return 0.5 * (1.0 - math.cos(math.pi * fraction))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Step(WeightSchedule):
    """Piecewise constant: ``initial``, then ``values[j]`` from ``milestones[j]`` on.

    Args:
        initial: the weight before the first milestone.
        milestones: increasing positions where the weight changes.
        values: the weight from each milestone on, one per milestone.
        unit: ``"epoch"`` or ``"step"``.
    """

    kind: ClassVar[str] = "step"
    initial: float
    milestones: tuple[float, ...]
    values: tuple[float, ...]

    def at(self, position: float) -> float:
        """The value of the last milestone reached, or ``initial``."""
        weight = self.initial
        for milestone, value in zip(self.milestones, self.values, strict=True):
            if position < milestone:
                break
            weight = value
        return weight

    def check(self, owner: str, option: str) -> None:
        """Validate the values and that the milestones increase."""
        super().check(owner, option)
        check_number(owner, f"{option}.initial", self.initial, minimum=0.0)
        if not self.milestones or len(self.milestones) != len(self.values):
            raise ValueError(
                f"{owner}: option {option!r}: the step schedule needs one value per milestone "
                f"and at least one, got milestones={list(self.milestones)} and "
                f"values={list(self.values)}"
            )
        for j, (milestone, value) in enumerate(zip(self.milestones, self.values, strict=True)):
            check_number(owner, f"{option}.milestones[{j}]", milestone, minimum=0.0)
            check_number(owner, f"{option}.values[{j}]", value, minimum=0.0)
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:], strict=False)):
            raise ValueError(
                f"{owner}: option {option!r}: the step schedule's milestones must increase, "
                f"got {list(self.milestones)}"
            )


SCHEDULES: dict[str, type[WeightSchedule]] = {
    cls.kind: cls for cls in (Constant, Linear, Cosine, Step)
}


def parse_schedule(owner: str, option: str, spec: object) -> WeightSchedule:
    """A checked schedule from a config value: a number, a mapping or a built schedule.

    Args:
        owner: the name that starts error messages (``"composite"``).
        option: the option's path in messages (``"weights.dice"``).
        spec: a number (a constant weight), a :class:`WeightSchedule`, or a mapping with
            ``schedule`` (one of :data:`SCHEDULES`) and that schedule's options.

    Returns:
        The schedule.

    Raises:
        ValueError: for an unknown schedule or option (the message lists the valid ones), a
            missing option, or an invalid value.
        TypeError: for a spec or option value of the wrong type.
    """
    if isinstance(spec, WeightSchedule):
        schedule = spec
    elif isinstance(spec, Mapping):
        schedule = _from_mapping(owner, option, spec)
    elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
        schedule = Constant(value=check_number(owner, option, spec, minimum=0.0))
    else:
        raise TypeError(
            f"{owner}: option {option!r} must be a number or a schedule mapping such as "
            f"{{schedule: linear, initial: 0.0, final: 1.0, end: 5}}, got {spec!r}"
        )
    schedule.check(owner, option)
    return schedule


def _from_mapping(owner: str, option: str, spec: Mapping[str, object]) -> WeightSchedule:
    options = dict(spec)
    kind = options.pop("schedule", None)
    check_choice(owner, f"{option}.schedule", kind, tuple(SCHEDULES))
    cls = SCHEDULES[str(kind)]
    fields = {field.name: field for field in dataclasses.fields(cls)}
    valid = ", ".join(sorted(["schedule", *fields]))
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"{owner}: option {option!r}: unknown option {unknown[0]!r} for a {kind} "
            f"schedule; valid options: {valid}"
        )
    missing = sorted(
        name
        for name, field in fields.items()
        if name not in options
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(
            f"{owner}: option {option!r}: the {kind} schedule needs {missing}; "
            f"valid options: {valid}"
        )
    for name in ("milestones", "values"):
        if name in options:
            options[name] = _as_tuple(owner, f"{option}.{name}", options[name])
    return cls(**options)


def _as_tuple(owner: str, option: str, value: object) -> tuple[float, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{owner}: option {option!r} must be a list of numbers, got {value!r}")
    return tuple(value)
