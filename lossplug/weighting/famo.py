r"""Fast Adaptive Multitask Optimization, FAMO (Liu, Feng, Stone & Liu 2023).

"FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023. Logits :math:`\xi \in
\mathbb{R}^K` give task weights :math:`z = \mathrm{softmax}(\xi)`, and each step follows the
gradient of :math:`\sum_i c \, z_i \log L_i` with :math:`c = (\sum_j z_j / L_j)^{-1}` held
constant: term :math:`i` weighs

.. math::

    \lambda_i = \frac{c \, z_i}{L_i} = \frac{z_i / L_i}{\sum_j z_j / L_j}
              = \mathrm{softmax}(\xi - \log L)_i ,

so the factors sum to 1 and a term whose loss is small (in :math:`\log`, relative to the
others) weighs more. After the step, the logits learn from how much each log loss fell,
:math:`\delta_i = \log L_i(t) - \log L_i(t+1)`:

.. math::

    \xi \leftarrow \xi - \beta \, \mathrm{Adam}\big(J_z^\top \delta + \gamma \, \xi\big),
    \qquad J_z^\top \delta = z \odot (\delta - z^\top \delta),

with :math:`J_z` the Jacobian of the softmax, learning rate :math:`\beta` and decay
:math:`\gamma`. A task whose loss fell less than the weighted average gains weight: the
tasks' losses fall at similar rates. It needs the terms' values only, no per-task gradient:
its cost does not grow with the model (:math:`O(1)` in the paper's sense).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lossplug._validation import check_number, value_checks_apply
from lossplug.weighting.base import LearnedWeighting

#: the learning rate :math:`\beta` of the logits (the official code's default).
DEFAULT_LR = 0.025
#: the decay :math:`\gamma` of the logits (the official code's default).
DEFAULT_WEIGHT_DECAY = 0.01
#: Adam's moment decays and epsilon, as in ``torch.optim.Adam`` (the official code's optimizer).
BETAS = (0.9, 0.999)
EPS = 1e-8


class FAMOWeighting(LearnedWeighting):
    r"""FAMO's factors :math:`\mathrm{softmax}(\xi - \log L)`; its logits learn from each step.

    **Where** :math:`L(t+1)` **comes from.** The paper's update compares the losses before
    and after a step, and its example code runs a second forward pass on the same batch
    after every step. Here no pass is added: the first training batch of step :math:`t + 1`
    gives :math:`L(t+1)`, the first batch of step :math:`t` gave :math:`L(t)` (the order of
    the official toy example, where one batch is the whole data). So :math:`\delta_i` is the
    change of term :math:`i` from one batch to the next: the step's progress plus the
    difference between two batches. That difference has mean zero (both batches come from
    the same data) and does not accumulate (consecutive :math:`\delta` share a batch with
    opposite signs, so their sum telescopes); Adam's averaging and the small :math:`\beta`
    absorb it. The price is a noisier signal than a second pass would give, never a pass.

    **When it learns.** :meth:`observe` sees each training batch's terms (from
    :meth:`~lossplug.CompositeLoss.total`). The first batch of an optimizer step, as told
    by :meth:`set_progress` (which :class:`~lossplug.LossPlugMixin` calls before every
    training batch), updates the logits once and sets the factors every micro-batch of the
    step uses: with gradient accumulation the logits move once per optimizer step, and the
    factors come from the step's first micro-batch. Without :meth:`set_progress` every
    observed batch is a step of its own.

    **Under DDP** the values are the mean over the processes (one ``all_reduce`` of
    :math:`K` numbers per optimizer step), so every process computes the same logits and
    factors, bit for bit; DDP averages the gradients the same way, so the update is FAMO's on
    the global batch.

    **Positive terms.** FAMO weighs :math:`\log L_i`, so every term must be :math:`> 0`. The
    first training batch is checked on the host and a term :math:`\le 0` raises; later
    batches are not read (no host sync): one in which a term is :math:`\le 0` or not finite
    leaves the logits, Adam's moments, the factors and :math:`L(t)` as they were.

    The logits, Adam's state, the last :math:`\log L` and the factors are buffers: they
    follow the module across devices (in float32, also when the module is cast to 16 bits)
    and into checkpoints, and no optimizer sees them. Before the first training batch the
    factors are :math:`1/K`.

    Args:
        num_terms: how many terms are weighted (:math:`K`).
        lr: the logits' learning rate :math:`\beta > 0` (default 0.025).
        weight_decay: the decay :math:`\gamma \ge 0` of the logits (default 0.01).

    Raises:
        ValueError: for an ``lr`` that is not a finite number > 0, or a ``weight_decay`` that
            is not a finite number >= 0.

    Example:
        >>> famo = FAMOWeighting(2)
        >>> famo.observe(torch.tensor([4.0, 1.0], requires_grad=True))
        >>> famo.factors()  # z = (1/2, 1/2): softmax(-log L)
        tensor([0.2000, 0.8000])
    """

    name = "famo"
    observes = True

    logits: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    adam_steps: Tensor
    log_losses: Tensor
    lambdas: Tensor

    def __init__(
        self, num_terms: int, lr: float = DEFAULT_LR, weight_decay: float = DEFAULT_WEIGHT_DECAY
    ) -> None:
        super().__init__(num_terms)
        self.lr = check_number("famo", "lr", lr, minimum=0.0, exclusive_minimum=True)
        self.weight_decay = check_number("famo", "weight_decay", weight_decay, minimum=0.0)
        self.register_buffer("logits", torch.zeros(num_terms))
        self.register_buffer("exp_avg", torch.zeros(num_terms))
        self.register_buffer("exp_avg_sq", torch.zeros(num_terms))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.long))
        # log L(t) of the last step that counted; NaN until the first
        self.register_buffer("log_losses", torch.full((num_terms,), torch.nan))
        self.register_buffer("lambdas", torch.full((num_terms,), 1.0 / num_terms))
        self._step: int | None = None  # the optimizer step training is at (set_progress)
        self._seen_step: int | None = None  # the step the logits last moved for
        self._checked = False  # whether a batch's values were checked on the host

    def extra_repr(self) -> str:
        """The options, for ``repr``."""
        return f"lr={self.lr}, weight_decay={self.weight_decay}"

    def factors(self) -> Tensor:
        r"""The current :math:`\lambda_i = \mathrm{softmax}(\xi - \log L)_i`."""
        return self.lambdas

    def set_progress(self, epoch: int, step: int) -> None:
        """Note the optimizer step training is at: its first observed batch updates."""
        self._step = step

    def observe(self, values: Tensor, shared: Tensor | None = None) -> None:
        """Update the logits and factors from the first training batch of an optimizer step.

        Args:
            values: the batch's unweighted term values, shape ``(num_terms,)``.
            shared: unused.

        Raises:
            ValueError: if a term is <= 0 in the first batch observed.
        """
        if self._step is not None and self._step == self._seen_step:
            return  # a later micro-batch of the step: its factors are set
        self._seen_step = self._step
        mean = _mean_over_processes(values.detach().float())
        if not self._checked and value_checks_apply(values):
            self._checked = True
            _check_positive(mean)
        log_losses = mean.log()
        valid = torch.isfinite(log_losses).all()
        delta = self.log_losses - log_losses
        self._adam_step(delta, valid & torch.isfinite(delta).all())
        factors = torch.softmax(self.logits - log_losses, dim=0)
        self.lambdas.copy_(torch.where(valid, factors, self.lambdas))
        self.log_losses.copy_(torch.where(valid, log_losses, self.log_losses))

    def _adam_step(self, delta: Tensor, update: Tensor) -> None:
        r"""One Adam step of the logits on :math:`J_z^\top \delta + \gamma \xi` where ``update``."""
        z = torch.softmax(self.logits, dim=0)
        grad = z * (delta - (z * delta).sum()) + self.weight_decay * self.logits
        steps = self.adam_steps + 1
        exp_avg = BETAS[0] * self.exp_avg + (1 - BETAS[0]) * grad
        exp_avg_sq = BETAS[1] * self.exp_avg_sq + (1 - BETAS[1]) * grad * grad
        corrected = exp_avg / (1 - BETAS[0] ** steps)
        corrected_sq = exp_avg_sq / (1 - BETAS[1] ** steps)
        logits = self.logits - self.lr * corrected / (corrected_sq.sqrt() + EPS)
        moved = ((self.logits, logits), (self.exp_avg, exp_avg), (self.exp_avg_sq, exp_avg_sq))
        for state, new in moved:
            state.copy_(torch.where(update, new, state))
        self.adam_steps.add_(update.long())

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> nn.Module:
        """Move the state with the module, keeping its dtype (``module.to(bfloat16)`` too)."""
        before = dict(self._buffers)
        super()._apply(fn, recurse)
        for name, old in before.items():
            moved = self._buffers[name]
            if old is not None and moved is not None and moved.dtype != old.dtype:
                self._buffers[name] = old.to(moved.device)
        return self


def _mean_over_processes(values: Tensor) -> Tensor:
    """The mean of ``values`` over the processes (one ``all_reduce``); unchanged in one."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    total = values.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def _check_positive(values: Tensor) -> None:
    """Raise for a term <= 0 (a NaN is the non-finite policy's to report, not FAMO's)."""
    read = values.tolist()
    bad = [k for k, value in enumerate(read) if value <= 0]
    if bad:
        raise ValueError(
            f"famo: every term must be > 0 (FAMO weighs log L), got {read} for the terms in "
            f"order (term {', '.join(map(str, bad))} <= 0) at the first training batch. Fix: "
            "shift a term that can reach 0 or below by its lower bound, or use another weighting"
        )
