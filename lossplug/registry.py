"""Name → loss registry: the catalogue's names, and a way to plug in your own loss."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import TypeVar

from torch import Tensor, nn

from lossplug.losses.base import LossModule

LossFactory = Callable[..., nn.Module]
FactoryT = TypeVar("FactoryT", bound=LossFactory)

_REGISTRY: dict[str, LossFactory] = {}


class UnknownLossError(ValueError):
    """Raised for a loss name that is not registered; the message lists the known names."""


def register_loss(
    name: str, factory: LossFactory | None = None, *, overwrite: bool = False
) -> Callable[[FactoryT], FactoryT] | LossFactory:
    """Register a loss factory (a class or function returning an ``nn.Module``) under a name.

    Use it as a decorator, ``@register_loss("my_loss")``, or call it directly,
    ``register_loss("my_loss", MyLoss)``. Plain callables ``f(pred, target) -> Tensor`` are
    wrapped by :func:`build_loss` when built.

    Args:
        name: the name users type (``loss=my_loss``).
        factory: the class or function; omitted when used as a decorator.
        overwrite: allow replacing an existing registration.

    Returns:
        The factory (or, as a decorator, a function that registers and returns it).

    Raises:
        ValueError: if ``name`` is taken and ``overwrite`` is false.
    """

    def register(obj: FactoryT) -> FactoryT:
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not obj:
            raise ValueError(
                f"a loss named {name!r} is already registered ({_REGISTRY[name]!r}); "
                "pass overwrite=True to replace it"
            )
        _REGISTRY[name] = obj
        return obj

    return register if factory is None else register(factory)


def available_losses() -> list[str]:
    """The registered loss names, sorted."""
    return sorted(_REGISTRY)


def build_loss(
    spec: str | nn.Module | Callable[[Tensor, Tensor], Tensor], **options: object
) -> LossModule:
    """Build a loss module from a registered name, a module, or a plain callable.

    Args:
        spec: a registered name (see :func:`available_losses`), a :class:`LossModule`, any
            other ``nn.Module`` or a callable ``f(pred, target) -> Tensor``.
        **options: constructor options, for a registered name only.

    Returns:
        A :class:`LossModule`; foreign modules and callables are wrapped in
        :class:`CallableLoss` so they offer ``components()`` too.

    Raises:
        UnknownLossError: for an unregistered name; the message lists the known ones.
        TypeError: for options passed with an already-built loss, or a non-callable spec.
    """
    if isinstance(spec, str):
        if spec not in _REGISTRY:
            close = difflib.get_close_matches(spec, _REGISTRY, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownLossError(
                f"unknown loss {spec!r}.{hint} Available losses: {', '.join(available_losses())}"
            )
        loss = _REGISTRY[spec](**options)
        return loss if isinstance(loss, LossModule) else CallableLoss(loss, name=spec)
    if options:
        raise TypeError(
            f"build_loss: options {sorted(options)} can only be given with a registered name, "
            f"not with an already-built loss {spec!r}"
        )
    if isinstance(spec, LossModule):
        return spec
    if callable(spec):
        return CallableLoss(spec)
    raise TypeError(
        f"build_loss: expected a loss name, an nn.Module or a callable, got {type(spec).__name__}"
    )


class CallableLoss(LossModule):
    """Adapts any ``nn.Module`` or callable ``f(pred, target)`` to the :class:`LossModule` API.

    A wrapped object that has its own ``components(pred, target)`` keeps it; otherwise its
    result is the single component, named ``name``.

    Args:
        fn: the module or callable.
        name: the component's name; defaults to the module's class or the function's name.
    """

    input_space = "values"
    repr_options = ("loss_name",)

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], name: str | None = None) -> None:
        super().__init__()
        self.reduction = str(getattr(fn, "reduction", "mean"))
        self.fn = fn
        self.loss_name = name or _default_name(fn)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The wrapped loss's value."""
        return self.fn(pred, target)

    def component_names(self) -> tuple[str, ...] | None:
        """The wrapped loss's own component names, or just :attr:`loss_name`."""
        own = getattr(self.fn, "component_names", None)
        if callable(own):
            return own()
        return None if callable(getattr(self.fn, "components", None)) else (self.loss_name,)

    def components(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The wrapped loss's own components, or one entry named :attr:`loss_name`."""
        own = getattr(self.fn, "components", None)
        if callable(own):
            return dict(own(pred, target))
        return {self.loss_name: self.fn(pred, target)}


def _default_name(fn: object) -> str:
    target = fn if inspect.isfunction(fn) or inspect.isclass(fn) else type(fn)
    return getattr(target, "__name__", "loss").lower()
