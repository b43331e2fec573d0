r"""Per-term gradient diagnostics: which loss term drives the update, and do the terms agree?

For a loss :math:`L = \sum_i w_i L_i` and the shared parameters :math:`\theta`, every
``every_n_steps`` optimizer steps :class:`GradientDiagnostics` computes each term's gradient
:math:`g_i = \nabla_\theta\, w_i L_i` and logs

.. math::

    \texttt{train/grad\_norm/}i = \lVert g_i \rVert_2, \qquad
    \texttt{train/grad\_cosine/}a\texttt{\_\_}b =
        \frac{g_a \cdot g_b}{\lVert g_a \rVert_2 \, \lVert g_b \rVert_2}

for every pair :math:`a < b` in term order. The update's gradient is :math:`\sum_i g_i`, so the
norms show which term dominates it, and a negative cosine shows two terms pulling the shared
parameters in conflicting directions (the "conflicting gradients" of Yu et al. (2020),
"Gradient Surgery for Multi-Task Learning"; GradNorm, Chen et al. (2018), balances the
same norms).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor, nn

from lossplug._gradients import term_gradients
from lossplug.mixin import LossPlugMixin

NAME = "GradientDiagnostics"
#: parameters whose names start with this belong to the criterion (learned loss weights).
CRITERION_PREFIX = "criterion."


class GradientDiagnostics(pl.Callback):
    """Logs each loss term's gradient norm and the pairwise cosines every ``every_n_steps`` steps.

    Add it to the ``Trainer``'s callbacks for a :class:`~lossplug.LossPlugMixin` module (or
    ``diagnostics=grad`` on the ``scripts/train.py`` command line). On a sampled step
    (``global_step % every_n_steps == 0``) it runs in ``on_before_backward``, where the step's
    graph is still alive: for each term of ``criterion.weighted_terms(step_components)`` it
    calls ``torch.autograd.grad(w_i * L_i, params, retain_graph=True)``. It never touches
    ``.grad``, so the update is the same as without the callback.

    Logged, on every process alike: ``train/grad_norm/{name}`` for each term and
    ``train/grad_cosine/{a}__{b}`` for each pair ``a < b`` in term order (none for a
    single-term loss). A cosine is defined as 0 when either gradient is zero. The values are
    written to every logger at step ``global_step`` on each sampled step (whatever the
    trainer's ``log_every_n_steps``) and kept in ``trainer.callback_metrics``.

    Under DDP each process's per-term gradients are averaged over the processes (one
    ``all_reduce`` of all terms' flattened gradients, stacked, divided by the world size)
    before norms and cosines are taken. DDP's update applies the mean over processes of the
    total's gradient, which is exactly the sum of these averaged per-term gradients, so the
    diagnostics describe the update that is applied, and every process logs the same values.

    With ``accumulate_grad_batches > 1`` the first batch of a sampled step is diagnosed. The
    gradients are those of the loss as the step computed it, before gradient clipping and
    before the optimizer transforms them.

    Cost, on sampled steps only: one extra backward pass per term through the step's graph
    (kept alive for it with ``retain_graph``), memory for one flattened gradient per term
    (``terms x parameters`` numbers) and, under DDP, one ``all_reduce`` of that matrix; other
    steps pay nothing. ``python -m benchmarks.bench_diagnostics`` measures it.

    Args:
        every_n_steps: diagnose every this many optimizer steps (an integer ``>= 1``), starting
            with step 0.
        params: which parameters the gradients are taken on. ``None`` (the default): every
            trainable parameter of the module except the criterion's own (learned loss
            weights). A name prefix or a list of them: the trainable parameters whose name
            equals a prefix or starts with it followed by a dot (``"net.encode1"`` selects
            ``net.encode1.0.weight``, not ``net.encode12.weight``). Parameters are selected
            when fitting starts; those frozen later are left out from then on.

    Raises:
        ValueError: for ``every_n_steps < 1`` or not an integer, or a prefix that is not a
            string; when fitting starts, for a prefix matching no trainable parameter.
        TypeError: when fitting starts, if the module is not a ``LossPlugMixin``.

    Example:
        >>> trainer = pl.Trainer(callbacks=[GradientDiagnostics(every_n_steps=10)])
    """

    def __init__(self, every_n_steps: int = 50, params: str | Sequence[str] | None = None) -> None:
        integer = isinstance(every_n_steps, int) and not isinstance(every_n_steps, bool)
        if not integer or every_n_steps < 1:
            raise ValueError(
                f"{NAME}: option 'every_n_steps' must be an integer >= 1, got {every_n_steps!r}"
            )
        self.every_n_steps = every_n_steps
        self.prefixes = _check_prefixes(params)
        self._params: list[nn.Parameter] = []
        self._last_sampled_step: int | None = None

    def custom_scalar_charts(self) -> dict[str, list[Any]]:
        """The TensorBoard charts of what this callback logs (the mixin lays them out)."""
        return {
            "gradient norm per term": ["Multiline", [r"^train/grad_norm/.*$"]],
            "gradient cosine between terms": ["Multiline", [r"^train/grad_cosine/.*$"]],
        }

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the module and select the parameters, before the first step."""
        if not isinstance(pl_module, LossPlugMixin):
            raise TypeError(
                f"{NAME}: the module must be a lossplug.LossPlugMixin (it reads the step's loss "
                f"components from it), got {type(pl_module).__name__}"
            )
        self._params = select_parameters(pl_module, self.prefixes)
        self._last_sampled_step = None

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        """On a sampled step, log the terms' gradient norms and cosines."""
        step = trainer.global_step
        if step % self.every_n_steps or step == self._last_sampled_step:
            return
        self._last_sampled_step = step
        components = pl_module.step_components
        if components is None:
            raise RuntimeError(
                f"{NAME}: the module's step_components is None in a training step; compute "
                "the training loss with LossPlugMixin.model_step (or set step_components)"
            )
        terms = pl_module.criterion.weighted_terms(components)
        params = [p for p in self._params if p.requires_grad]
        gradients = term_gradients(list(terms.values()), params)
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(gradients)
            gradients /= trainer.world_size
        values = gradient_statistics(tuple(terms), gradients)
        pl_module.log_dict(values, on_step=True, on_epoch=False, logger=False)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=step)


def select_parameters(module: nn.Module, prefixes: tuple[str, ...] | None) -> list[nn.Parameter]:
    """The trainable parameters the gradients are taken on.

    Args:
        module: the LightningModule.
        prefixes: ``None`` for every trainable parameter outside the criterion, or name
            prefixes (a name matches a prefix equal to it or followed by a dot).

    Returns:
        The selected parameters, in ``named_parameters`` order.

    Raises:
        ValueError: if a prefix matches no trainable parameter, or nothing is selected.
    """
    trainable = {name: p for name, p in module.named_parameters() if p.requires_grad}
    if prefixes is None:
        selected = [p for name, p in trainable.items() if not name.startswith(CRITERION_PREFIX)]
        if not selected:
            raise ValueError(
                f"{NAME}: {type(module).__name__} has no trainable parameter outside its "
                f"criterion; trainable parameters: {_some(trainable)}"
            )
        return selected
    for prefix in prefixes:
        if not any(_matches(name, prefix) for name in trainable):
            raise ValueError(
                f"{NAME}: option 'params' prefix {prefix!r} matches no trainable parameter of "
                f"{type(module).__name__}; its trainable parameters include {_some(trainable)}"
            )
    return [p for name, p in trainable.items() if any(_matches(name, q) for q in prefixes)]


def gradient_statistics(names: Sequence[str], gradients: Tensor) -> dict[str, float]:
    """The logged values: each row's norm and the cosine of each pair of rows.

    Args:
        names: the terms' names, one per row of ``gradients``.
        gradients: ``(terms, parameters)`` flattened gradients.

    Returns:
        ``{"train/grad_norm/{name}": norm}`` in term order, then
        ``{"train/grad_cosine/{a}__{b}": cosine}`` for each pair ``a < b`` (0 when either
        norm is 0).
    """
    norms = torch.linalg.vector_norm(gradients, dim=1)
    dots = gradients @ gradients.T
    scale = norms[:, None] * norms[None, :]
    cosines = torch.where(scale > 0, dots / scale, 0.0).clamp(-1.0, 1.0)
    pairs = list(itertools.combinations(range(len(names)), 2))
    first, second = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T.to(gradients.device)
    values = torch.cat([norms, cosines[first, second]]).tolist()
    keys = [f"train/grad_norm/{name}" for name in names]
    keys += [f"train/grad_cosine/{names[a]}__{names[b]}" for a, b in pairs]
    return dict(zip(keys, values, strict=True))


def _check_prefixes(params: Any) -> tuple[str, ...] | None:
    """``params`` as a tuple of prefixes (``None`` stays ``None``)."""
    if params is None:
        return None
    prefixes = (params,) if isinstance(params, str) else tuple(params)
    if not prefixes or not all(isinstance(prefix, str) and prefix for prefix in prefixes):
        raise ValueError(
            f"{NAME}: option 'params' must be None, a parameter name prefix or a list of "
            f"them, got {params!r}"
        )
    return tuple(prefix.rstrip(".") for prefix in prefixes)


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _some(named: Mapping[str, Tensor], count: int = 8) -> str:
    """Up to ``count`` names, for an error message."""
    names = list(named)
    more = f", ... ({len(names)} in all)" if len(names) > count else ""
    return ", ".join(names[:count]) + more
