"""Optimizers and learning-rate schedulers from configs or factories, with parameter groups.

An optimizer is given as a factory called ``optimizer(params=...)`` (what Hydra's
``_partial_: true`` builds, also when an app instantiates its model config recursively) or as
its config. Besides the optimizer's own options, a config
may hold the parameter-group options of :class:`ParamGroupOptions` (as MMEngine's
``paramwise_cfg``; ``null`` means the default)::

    _target_: torch.optim.AdamW
    _partial_: true
    lr: 1.0e-3
    weight_decay: 0.01
    lr_mult: {backbone: 0.1}   # modules whose name starts with "backbone" train 10x slower
    norm_decay_mult: 0.0       # no weight decay on normalisation layers ...
    bias_decay_mult: 0.0       # ... nor on biases

Every trainable parameter of the module joins the optimizer, the criterion's learnable
parameters included; learned loss weights (:class:`~lossplug.weighting.LearnedWeighting`,
e.g. uncertainty weighting's log-variances) and learned temperatures
(:class:`~lossplug.losses.temperature.LearnedTemperature`) get no weight decay. A scheduler
config may hold Lightning's ``interval``, ``frequency``, ``monitor``, ``strict`` and ``name``;
run-length options left ``null`` (``T_max``, ``total_steps``) are filled from the trainer, and
``max_lr: null`` with each group's lr.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from torch import nn
from torch.optim import Optimizer

from lossplug._validation import check_number
from lossplug.config.options import (
    LIGHTNING_SCHEDULER_OPTIONS,
    PARAM_GROUP_OPTIONS,
    ConfigError,
    check_keywords,
    check_options,
    is_config,
    split_config,
    to_plain,
)
from lossplug.losses.temperature import LearnedTemperature
from lossplug.weighting import LearnedWeighting

#: scheduler options that, when ``null``, receive the run's length in ``interval`` units.
RUN_LENGTH_OPTIONS = ("T_max", "total_steps")

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # batch, sync-batch and instance norms
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)

OptimizerFactory = Callable[..., Optimizer]
SchedulerFactory = Callable[..., Any]


@dataclass(frozen=True)
class ParamGroupOptions:
    """How parameters are grouped: per-module lr multipliers, decay on norms and biases.

    Args:
        lr_mult: ``{module name prefix: multiplier}``; the longest matching prefix wins.
        norm_decay_mult: weight-decay multiplier for the parameters of normalisation layers
            (their biases included).
        bias_decay_mult: weight-decay multiplier for the other parameters named ``bias``.
    """

    lr_mult: Mapping[str, float] = field(default_factory=dict)
    norm_decay_mult: float = 0.0
    bias_decay_mult: float = 0.0

    def __post_init__(self) -> None:
        for prefix, mult in self.lr_mult.items():
            check_number("optimizer", f"lr_mult.{prefix}", mult, minimum=0.0)
        check_number("optimizer", "norm_decay_mult", self.norm_decay_mult, minimum=0.0)
        check_number("optimizer", "bias_decay_mult", self.bias_decay_mult, minimum=0.0)


def param_groups(module: nn.Module, options: ParamGroupOptions) -> list[dict[str, Any]]:
    """Split a module's trainable parameters into optimizer parameter groups.

    Args:
        module: the module to optimise (a LightningModule: its criterion is a child).
        options: the grouping rules.

    Returns:
        Groups ``{"params": [...], "lr_mult": a, "decay_mult": b, "name": ...}``, one per
        ``lr_mult`` prefix and decay multiplier, named after them (:func:`_group_name`);
        :meth:`OptimizerSpec.build` applies the multipliers to the optimizer's lr and decay.

    Raises:
        ConfigError: if a prefix in ``options.lr_mult`` matches no parameter.
    """
    groups: dict[tuple[str, float], list[nn.Parameter]] = {}
    used_prefixes: set[str] = set()
    for name, parameter, owner in _named_trainable_parameters(module):
        prefix = _longest_prefix(name, options.lr_mult)
        used_prefixes.add(prefix)
        if isinstance(owner, (LearnedWeighting, LearnedTemperature)):
            decay_mult = 0.0  # learned weights and temperatures: decay would pull them to a value
        elif isinstance(owner, _NORM_TYPES):
            decay_mult = options.norm_decay_mult
        elif name.rsplit(".", 1)[-1] == "bias":
            decay_mult = options.bias_decay_mult
        else:
            decay_mult = 1.0
        groups.setdefault((prefix, decay_mult), []).append(parameter)
    unused = sorted(set(options.lr_mult) - used_prefixes)
    if unused:
        children = ", ".join(name for name, _ in module.named_children())
        raise ConfigError(
            f"optimizer: lr_mult names {unused}, which match no trainable parameter; "
            f"the module's top-level children are: {children}"
        )
    return [
        {
            "params": params,
            "lr_mult": options.lr_mult.get(prefix, 1.0),
            "decay_mult": decay_mult,
            "name": _group_name(prefix, decay_mult),
        }
        for (prefix, decay_mult), params in groups.items()
    ]


def _group_name(prefix: str, decay_mult: float) -> str:
    """A group's name, as Lightning's ``LearningRateMonitor`` logs it: ``lr-AdamW/{name}``.

    The ``lr_mult`` prefix (``default`` for none) and, where weight decay is scaled, how:
    ``backbone``, ``backbone/no_decay``, ``default/decay_x0.5``.
    """
    name = prefix or "default"
    if decay_mult == 1.0:
        return name
    return f"{name}/no_decay" if decay_mult == 0.0 else f"{name}/decay_x{decay_mult:g}"


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer factory and its parameter-group options, ready to build for a module."""

    factory: OptimizerFactory
    groups: ParamGroupOptions = field(default_factory=ParamGroupOptions)

    @classmethod
    def parse(cls, optimizer: Mapping[str, Any] | OptimizerFactory) -> OptimizerSpec:
        """Read an optimizer config or factory, checking its options and values.

        Raises:
            ConfigError: for an unknown option.
            ValueError: for a negative or non-finite ``lr``, ``weight_decay`` or multiplier.
        """
        if is_config(optimizer) or callable(optimizer):
            factory, group_options = _factory(optimizer, "optimizer", PARAM_GROUP_OPTIONS)
            set_options = {key: value for key, value in group_options.items() if value is not None}
            spec = cls(factory, ParamGroupOptions(**set_options))
        else:
            raise TypeError(
                "optimizer must be a config with a '_target_' or a factory called as "
                f"optimizer(params=...), got {type(optimizer).__name__}"
            )
        for option in ("lr", "weight_decay"):
            value = _keywords(spec.factory).get(option)
            if isinstance(value, (int, float)):
                check_number("optimizer", option, value, minimum=0.0)
        return spec

    def build(self, module: nn.Module) -> Optimizer:
        """The optimizer over ``module``'s trainable parameters, grouped and scaled."""
        optimizer = self.factory(params=param_groups(module, self.groups))
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group["lr_mult"]
            if "weight_decay" in group:
                group["weight_decay"] = group["weight_decay"] * group["decay_mult"]
        return optimizer


@dataclass(frozen=True)
class SchedulerSpec:
    """A scheduler factory called ``scheduler(optimizer)``, with Lightning's settings."""

    factory: SchedulerFactory
    lightning: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, scheduler: Mapping[str, Any] | SchedulerFactory | None) -> SchedulerSpec | None:
        """Read a scheduler config or factory; ``None`` or an empty config mean none.

        Raises:
            ConfigError: for an unknown option.
        """
        if scheduler is None or (isinstance(scheduler, Mapping) and not scheduler):
            return None
        if is_config(scheduler) or callable(scheduler):
            return cls(*_factory(scheduler, "scheduler", LIGHTNING_SCHEDULER_OPTIONS))
        raise TypeError(
            "scheduler must be None, a config with a '_target_' or a factory called as "
            f"scheduler(optimizer), got {type(scheduler).__name__}"
        )

    def build(self, optimizer: Optimizer, trainer: pl.Trainer) -> dict[str, Any]:
        """Lightning's ``lr_scheduler_config`` for ``optimizer``, run-length options filled in."""
        interval = self.lightning.get("interval", "epoch")
        keywords = _keywords(self.factory)
        filled: dict[str, Any] = {
            option: _run_length(trainer, interval, option)
            for option in RUN_LENGTH_OPTIONS
            if option in keywords and keywords[option] is None
        }
        if "max_lr" in keywords and keywords["max_lr"] is None:
            filled["max_lr"] = [group["lr"] for group in optimizer.param_groups]
        return {"scheduler": self.factory(optimizer, **filled), **self.lightning}


def _factory(
    given: Mapping[str, Any] | Callable[..., Any], what: str, own_options: tuple[str, ...]
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """A factory and lossplug's own options, from a checked config or from a factory.

    A ``functools.partial`` built from a config (Hydra's recursive instantiation of an app's
    model config builds one) carries lossplug's options among its keywords: they are taken
    out, so that the optimizer or scheduler never receives them, and the others are checked
    against the target's signature as a config's are.
    """
    if is_config(given):
        check_options(given, what, extra=own_options)
        rest, taken = split_config(given, own_options)
        return instantiate(rest, _partial_=True, _convert_="all"), taken
    if not isinstance(given, functools.partial):
        return given, {}
    keywords = given.keywords
    check_keywords(given.func, keywords, what, own_options)
    taken = {option: to_plain(keywords[option]) for option in own_options if option in keywords}
    rest = {key: value for key, value in keywords.items() if key not in taken}
    return (functools.partial(given.func, *given.args, **rest) if taken else given), taken


def _named_trainable_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter, nn.Module]]:
    seen: set[int] = set()
    for module_name, owner in module.named_modules():
        for name, parameter in owner.named_parameters(recurse=False):
            if parameter.requires_grad and id(parameter) not in seen:
                seen.add(id(parameter))
                yield (f"{module_name}.{name}" if module_name else name), parameter, owner


def _longest_prefix(name: str, prefixes: Mapping[str, float]) -> str:
    matches = [p for p in prefixes if name == p or name.startswith(p + ".")]
    return max(matches, key=len, default="")


def _keywords(factory: Callable[..., Any]) -> Mapping[str, Any]:
    return factory.keywords if isinstance(factory, functools.partial) else {}


def _run_length(trainer: pl.Trainer, interval: str, option: str) -> int:
    length = trainer.max_epochs if interval == "epoch" else trainer.estimated_stepping_batches
    if length is None or length < 0 or math.isinf(length):
        raise ConfigError(
            f"scheduler: option {option!r} is null, so it is taken from the run's length in "
            f"{interval}s, but the trainer's is not bounded; set scheduler.{option} or "
            "trainer.max_epochs"
        )
    return int(length)
