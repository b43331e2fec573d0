r"""Composite losses: named terms, fixed, scheduled or learned weights, per-term routing.

For terms :math:`L_i`, weights :math:`w_i(t) \ge 0` (constant or following a schedule of
the epoch or step, see :mod:`lossplug.weighting.schedules`) and, with a learned weighting,
factors :math:`\lambda_i`

.. math::

    L = \sum_i \lambda_i \, w_i(t) \, L_i\big(r_i(\hat y), r_i(y)\big) \; [+ R]

where :math:`r_i` routes term :math:`i` to its part of a multi-head output and target (with an
optional activation) and :math:`R` is the learned weighting's regulariser, if any:

- ``weighting="fixed"``: :math:`\lambda_i = 1`, no :math:`R`.
- ``weighting="uncertainty"`` (Kendall et al. 2018): :math:`\lambda_i = \tfrac12 e^{-s_i}`,
  :math:`R = \sum_i \tfrac12 s_i` with learnable :math:`s_i`. A weight :math:`w_i` then only
  sets where the effective weight starts (it is the same as starting :math:`s_i` at
  :math:`-\log w_i`), so weights must be constant and positive.
- ``weighting="dwa"`` (Liu et al. 2019): :math:`\lambda_i` from the ratio of the term's last
  two epoch means, see :mod:`lossplug.weighting.dwa`; it multiplies the (scheduled) weights.
- ``weighting="famo"`` (Liu et al. 2023): :math:`\lambda_i = \mathrm{softmax}(\xi - \log L)_i`
  from each training batch's values and logits :math:`\xi` that learn, once per optimizer
  step, from how fast each term falls, see :mod:`lossplug.weighting.famo`; it multiplies
  the (scheduled) weights.
- ``weighting="aligned_mtl"`` (Senushkin et al. 2023, on the shared representation): each
  training batch's :math:`\lambda_i` from the Gram matrix of the terms' gradients on the model
  output named by ``shared``, see :mod:`lossplug.weighting.aligned`; it multiplies the
  (scheduled) weights.

Each term is evaluated once; :meth:`CompositeLoss.components` returns the unweighted
:math:`L_i` by name (what is logged as ``{stage}/loss/{name}``) and the total is formed from
them by :meth:`CompositeLoss.total`, so logging the parts never costs a second forward pass.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lossplug._validation import check_choice
from lossplug.composite.routing import (
    Route,
    Selector,
    check_selector,
    parse_route,
    select_part,
)
from lossplug.losses.base import LossModule, MultiTermLoss, batch_count
from lossplug.registry import UnknownLossError, build_loss, register_loss
from lossplug.weighting import WEIGHTINGS, Constant, LearnedWeighting
from lossplug.weighting.schedules import parse_schedule

LossLike = nn.Module | Callable[[Tensor, Tensor], Tensor]
WeightSpec = float | Mapping[str, Any]

WEIGHTING_CHOICES: tuple[str, ...] = ("fixed", *WEIGHTINGS)


@register_loss("composite")
class CompositeLoss(MultiTermLoss):
    """A weighted sum of named loss terms, each on its own part of the output if routed.

    Args:
        terms: ``{name: loss}``; each loss is a :class:`~lossplug.LossModule`, a registered
            loss name, any ``nn.Module`` or a callable ``f(pred, target)`` (wrapped by
            :func:`lossplug.build_loss`). A term with several components of its own
            contributes their sum.
        weights: ``{name: weight}``; a weight is a finite number ``>= 0`` or a schedule, a
            mapping such as ``{schedule: linear, initial: 0.0, final: 1.0, end: 5}`` (see
            :mod:`lossplug.weighting.schedules`). Names missing here weigh 1.
        weighting: ``"fixed"`` (the weights as given), ``"uncertainty"``, ``"dwa"`` or
            ``"famo"`` or ``"aligned_mtl"`` (learned factors multiplying the weights; see the
            module docstring).
        temperature: DWA's softmax temperature (``None``: 2); only with ``weighting="dwa"``.
        model_terms: names of terms the model computes itself (a VAE's KL divergence, an
            auxiliary or regularisation loss), given to :meth:`total` beside the loss terms'
            values: they take weights like the loss terms (``weights.kl``), are logged as
            components, and :class:`~lossplug.LossPlugMixin` takes them from its
            :meth:`~lossplug.LossPlugMixin.model_terms` hook.
        inputs: ``{name: route}``, a route being a :class:`Route` or a mapping with any of
            ``pred``, ``target`` (a key of a dict or an index of a tuple/list) and
            ``activation``; terms not named here read the whole output and target.
            A route is applied to each batch, so a key or index the model does not produce
            fails at the first batch: in a Lightning run that is the validation sanity check,
            before any training step.
        weighting_options: options of the learned weighting, passed to its class:
            ``{"lr": 0.025, "weight_decay": 0.01}`` for ``"famo"``
            (:class:`~lossplug.weighting.FAMOWeighting`).
        shared: the key of a dict output (or index of a tuple/list output) holding the shared
            representation every head reads, for a weighting that differentiates on it
            (``"aligned_mtl"``, which needs it); ``None``: none. Other weightings ignore it,
            so a config may name it whatever the weighting. Read like a route: a key the model
            does not produce fails at the first batch.

    Raises:
        ValueError: if there are no terms, a model term has a loss term's name, an option
            names no term, a weight or schedule is
            invalid (the message names the term and option and lists the valid ones), terms
            reading the same output expect different inputs, a route's activation does
            not give what its term expects, the learned weighting does not take an option
            or its value, or the weighting needs ``shared`` and it is not given.
        TypeError: if ``shared`` is neither a str, an int nor ``None``.

    Example:
        >>> from lossplug.losses import L1Loss, MSELoss
        >>> loss = CompositeLoss(
        ...     {"mse": MSELoss(), "l1": L1Loss()},
        ...     weights={"l1": {"schedule": "linear", "initial": 0.0, "final": 0.5, "end": 5}},
        ... )
    """

    name = "composite"
    input_space = "values"
    separate_counts = True  # each term counts its own items
    repr_options = ("weights", "weighting", "model_terms", "shared")

    term_weights: Tensor

    def __init__(
        self,
        terms: Mapping[str, LossLike | str],
        weights: Mapping[str, WeightSpec] | None = None,
        weighting: str = "fixed",
        temperature: float | None = None,
        inputs: Mapping[str, Route | Mapping[str, Any]] | None = None,
        model_terms: Sequence[str] = (),
        weighting_options: Mapping[str, Any] | None = None,
        shared: Selector = None,
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError(f"{self.name}: option 'terms' must name at least one loss, got none")
        self.terms = nn.ModuleDict(
            {name: self._build_term(name, loss) for name, loss in terms.items()}
        )
        self.model_terms = _check_model_terms(self.name, model_terms, tuple(self.terms))
        #: every component: the loss terms, then the model's terms.
        self.names = (*self.terms, *self.model_terms)
        self._index = {name: k for k, name in enumerate(self.names)}
        schedules = {
            name: parse_schedule(self.name, f"weights.{name}", spec)
            for name, spec in self._per_term("weights", weights, 1.0, self.names).items()
        }
        #: each term's weight: a number, or the schedule it follows.
        self.weights = {
            name: float(schedule.value) if isinstance(schedule, Constant) else schedule
            for name, schedule in schedules.items()
        }
        self._schedules = tuple(schedules.values())
        self._scheduled = tuple(k for k, s in enumerate(self._schedules) if not s.is_constant)
        self._current = [schedule(0, 0) for schedule in self._schedules]
        self.register_buffer("term_weights", torch.tensor(self._current))
        self.register_load_state_dict_post_hook(_read_loaded_weights)
        self.routes = {
            name: parse_route(self.name, name, spec, self.terms[name].input_space)
            for name, spec in self._per_term("inputs", inputs, Route(), tuple(self.terms)).items()
        }
        self.shared = check_selector(self.name, "shared", shared)
        self.weighting = weighting
        self.learned = self._build_weighting(weighting, temperature, weighting_options)
        self._shared_value: Tensor | None = None  # the training batch's, until total()
        self.input_space = self._common_input_space()

    # -- construction -----------------------------------------------------------------------

    def _build_term(self, name: str, loss: LossLike | str) -> LossModule:
        """A term's loss module; an error names the term."""
        try:
            return build_loss(loss)
        except (UnknownLossError, TypeError) as error:
            raise type(error)(f"{self.name}: option 'terms.{name}': {error}") from None

    def _per_term(
        self, option: str, values: Mapping[str, Any] | None, default: Any, names: tuple[str, ...]
    ) -> dict:
        """``values`` for each of ``names`` in order, ``default`` where missing."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(
                f"{self.name}: option {option!r} names {unknown}, which are not terms; "
                f"the terms are {sorted(names)}"
            )
        return {name: values.get(name, default) for name in names}

    def _build_weighting(
        self, weighting: str, temperature: float | None, options: Mapping[str, Any] | None
    ) -> LearnedWeighting | None:
        check_choice(self.name, "weighting", weighting, WEIGHTING_CHOICES)
        if temperature is not None and weighting != "dwa":
            raise ValueError(
                f"{self.name}: option 'temperature' applies to weighting='dwa' only, got "
                f"weighting={weighting!r}"
            )
        options = dict(options or {})
        valid = _weighting_options(weighting)
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"{self.name}: option 'weighting_options' names {unknown}, which "
                f"weighting={weighting!r} does not take; its options: {list(valid) or 'none'}"
            )
        if weighting == "fixed":
            return None
        if weighting == "uncertainty":
            for name, weight in self.weights.items():
                if not isinstance(weight, float) or weight <= 0:
                    raise ValueError(
                        f"{self.name}: option 'weights.{name}' must be a constant > 0 with "
                        f"weighting='uncertainty' (the learned weight would undo a schedule, "
                        f"and a weight of 0 drives its log-variance to -inf), got {weight!r}"
                    )
        if temperature is not None:
            if "temperature" in options:
                raise ValueError(
                    f"{self.name}: DWA's temperature is given twice, as option 'temperature' "
                    "and in option 'weighting_options'; give one"
                )
            options["temperature"] = temperature
        if WEIGHTINGS[weighting].needs_shared and self.shared is None:
            raise ValueError(
                f"{self.name}: weighting={weighting!r} needs option 'shared', the key (or "
                "index) of the model output holding the shared representation every head "
                "reads (shared: features for a model returning {..., 'features': z}); got none"
            )
        return WEIGHTINGS[weighting](len(self.names), **options)

    def _common_input_space(self) -> str:
        """The input space of the whole output; terms reading one head must agree on it.

        A term with an activation reads logits; ``"values"`` terms accept any input. When
        every term reads a part of the output, the whole output is a container: ``"values"``.
        """
        by_head: dict[Selector, dict[str, str]] = {}
        for name, term in self.terms.items():
            route = self.routes[name]
            space = "logits" if route.activation else term.input_space
            by_head.setdefault(route.pred, {})[name] = space
        for head, spaces in by_head.items():
            specific = set(spaces.values()) - {"values"}
            if len(specific) > 1:
                what = "the same 'pred'" if head is None else f"pred[{head!r}]"
                raise ValueError(
                    f"{self.name}: the terms reading {what} expect different inputs: "
                    f"{spaces}; give a term an activation (option 'inputs.<term>.activation') "
                    "or route it to another output"
                )
        whole = set(by_head.get(None, {}).values()) - {"values"}
        return whole.pop() if whole else "values"

    # -- the loss ---------------------------------------------------------------------------

    def component_names(self) -> tuple[str, ...]:
        """The term names: the loss terms, then the model terms."""
        return self.names

    def model_term_names(self) -> tuple[str, ...]:
        """The names of the terms the model computes (option ``model_terms``)."""
        return self.model_terms

    def components(self, pred: Any, target: Any) -> dict[str, Tensor]:
        """Each term's unweighted value on its route, by name."""
        self._keep_shared(pred)
        return {
            name: term(*self.routes[name].select(self.name, name, pred, target))
            for name, term in self.terms.items()
        }

    def measured_components(
        self, pred: Any, target: Any
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """Each term's value and count (a term of several components counts samples)."""
        self._keep_shared(pred)
        values: dict[str, Tensor] = {}
        counts: dict[str, Tensor | int] = {}
        for name, term in self.terms.items():
            term_pred, term_target = self.routes[name].select(self.name, name, pred, target)
            parts, part_counts = term.measured_components(term_pred, term_target)
            values[name] = term.total(parts)
            single = len(part_counts) == 1
            counts[name] = next(iter(part_counts.values())) if single else batch_count(term_pred)
        return values, counts

    def weighted_terms(self, components: Mapping[str, Tensor]) -> dict[str, Tensor]:
        r"""Each component times its current effective weight (:math:`\lambda_i w_i`)."""
        weights = self._effective_weights()
        return {name: weights[self._index[name]] * value for name, value in components.items()}

    def total(self, components: Mapping[str, Tensor]) -> Tensor:
        """The weighted sum of the components, plus the learned weighting's regulariser.

        Works on a batch's components and on epoch means alike. A training batch's
        (gradients enabled, values with a graph) is shown to the learned weighting first
        (:meth:`~lossplug.weighting.LearnedWeighting.observe`), so its factors may be the
        batch's own.

        Raises:
            ValueError: for a training batch without every term, or without the shared
                representation a weighting needs (the terms not computed by
                :meth:`components` or :meth:`measured_components` first).
        """
        if self.learned is not None and self.learned.observes and torch.is_grad_enabled():
            self._observe(components)
        total = super().total(components)
        regularizer = self.learned.regularizer() if self.learned is not None else None
        return total if regularizer is None else total + regularizer

    def _keep_shared(self, pred: Any) -> None:
        """Keep the batch's shared representation for a weighting that differentiates on it.

        It is selected on every batch (a wrong key fails at the first, validation included)
        and kept only where gradients are enabled, until :meth:`total` hands it over.
        """
        if self.learned is None or not self.learned.needs_shared:
            return
        reader = f"weighting {self.weighting!r}"
        shared = select_part(self.name, reader, "shared", "pred", pred, self.shared)
        self._shared_value = shared if torch.is_grad_enabled() else None

    def _observe(self, components: Mapping[str, Tensor]) -> None:
        """Show a training batch's terms (and shared representation) to the learned weighting."""
        shared, self._shared_value = self._shared_value, None
        if not any(value.requires_grad for value in components.values()) and shared is None:
            return  # epoch means, or a user's values without a graph
        missing = [name for name in self.names if name not in components]
        if missing:
            raise ValueError(
                f"{self.name}: weighting={self.weighting!r} needs every term of a training "
                f"batch to form its total; missing {missing}"
            )
        if self.learned.needs_shared and (shared is None or not shared.requires_grad):
            got = "none kept (compute the terms with components() or measured_components())"
            if shared is not None:
                got = "a tensor without a graph (requires_grad is False; a detached output?)"
            raise ValueError(
                f"{self.name}: weighting={self.weighting!r} differentiates the terms on "
                f"pred[{self.shared!r}] (option 'shared'), but got {got}"
            )
        values = [components[name] for name in self.names]
        dtype = functools.reduce(torch.promote_types, (value.dtype for value in values))
        self.learned.observe(torch.stack([value.to(dtype) for value in values]), shared)

    # -- weights that change ----------------------------------------------------------------

    def _effective_weights(self) -> list[float] | tuple[Tensor, ...]:
        """Python numbers for fixed weighting (no device work), else tensors with gradient."""
        if self.learned is None:
            return self._current
        return self._learned_weights().unbind()

    def _learned_weights(self) -> Tensor:
        return self.learned.factors() * self.term_weights

    def varying_weights(self) -> dict[str, Tensor]:
        """The current effective weight of each scheduled term, or of every learned one."""
        names = self.names
        if self.learned is not None:
            return dict(zip(names, self._learned_weights().detach(), strict=True))
        return {names[k]: self.term_weights[k] for k in self._scheduled}

    def set_progress(self, epoch: int, step: int) -> None:
        """Move the scheduled weights (the buffer too) and the learned weighting to a step."""
        if self.learned is not None:
            self.learned.set_progress(epoch, step)
        for k in self._scheduled:
            weight = self._schedules[k](epoch, step)
            if weight != self._current[k]:
                self._current[k] = weight
                self.term_weights[k].fill_(weight)

    def end_epoch(self, epoch_means: Mapping[str, Tensor]) -> None:
        """Hand a learned weighting the training epoch's (process-synced) mean of each term."""
        if self.learned is not None:
            self.learned.end_epoch(torch.stack([epoch_means[name] for name in self.names]))


def _weighting_options(weighting: str) -> tuple[str, ...]:
    """The options the class of a learned weighting takes (none for ``"fixed"``)."""
    if weighting not in WEIGHTINGS:
        return ()
    parameters = inspect.signature(WEIGHTINGS[weighting]).parameters
    return tuple(name for name in parameters if name != "num_terms")


def _check_model_terms(
    loss: str, model_terms: Sequence[str], terms: tuple[str, ...]
) -> tuple[str, ...]:
    """The model terms' names, checked: strings, unique, none a loss term's name."""
    if isinstance(model_terms, str):
        model_terms = (model_terms,)
    names = tuple(model_terms)
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"{loss}: option 'model_terms' must list names, got {list(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{loss}: option 'model_terms' names a term twice: {list(names)}")
    clash = sorted(set(names) & set(terms))
    if clash:
        raise ValueError(
            f"{loss}: option 'model_terms' names {clash}, which are loss terms too; give the "
            "model's terms other names"
        )
    return names


def _read_loaded_weights(module: CompositeLoss, incompatible_keys: object) -> None:
    """After ``load_state_dict``: scheduled weights as loaded, constant ones as configured.

    A scheduled weight keeps the loaded value until :meth:`CompositeLoss.set_progress`
    recomputes it from the (restored) epoch and step; a constant weight comes from the
    configuration, so a checkpoint loaded into a loss with other weights uses the new ones.
    """
    loaded = module.term_weights.tolist()
    for k in module._scheduled:
        module._current[k] = loaded[k]
    module.term_weights.copy_(torch.tensor(module._current))
