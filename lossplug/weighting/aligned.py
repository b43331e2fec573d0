r"""Aligned-MTL on the shared representation (Senushkin et al. 2023, the "-UB" variant).

"Independent Component Alignment for Multi-Task Learning", CVPR 2023. For terms
:math:`L_1 \dots L_K` and the shared representation :math:`z` every head reads (a batch of
features), let :math:`g_i = \partial L_i / \partial z`, flattened over the batch, and

.. math::

    M_{ij} = \langle g_i, g_j \rangle, \qquad
    M = V \Lambda V^\top, \qquad \sigma_k = \sqrt{\lambda_k},

the :math:`K \times K` Gram matrix and its eigendecomposition, with the :math:`R` eigenvalues
above the tolerance :math:`\tau = K \, \varepsilon \max_i M_{ii}` kept
(:math:`\varepsilon`: the machine epsilon of :math:`M`'s dtype). Then

.. math::

    B = \sigma_{\min} \, V_R \operatorname{diag}(1/\sigma_1, \dots, 1/\sigma_R) V_R^\top,
    \qquad \lambda = B \mathbf{1},

and the total is :math:`\sum_i \lambda_i w_i L_i`. The aligned gradients
:math:`\hat g_j = \sum_i B_{ij} g_i` are orthogonal and all of norm :math:`\sigma_{\min}` (the
nearest such set to the :math:`g_i`, an orthogonal Procrustes problem scaled to the smallest
singular value), so no term's direction dominates the update :math:`\sum_j \hat g_j =
\sum_i \lambda_i g_i`, which the chain rule carries from :math:`z` to the shared parameters.

Properties the implementation relies on:

- **Scale**: :math:`M \to c^2 M` leaves :math:`\lambda` unchanged (:math:`\sigma_{\min}` and
  :math:`1/\sigma_k` scale by :math:`c` and :math:`1/c`), so a batch mean's :math:`1/B` or
  DDP's :math:`1/W` does not matter.
- **Bounded**: :math:`B`'s eigenvalues :math:`\sigma_{\min}/\sigma_k` lie in :math:`(0, 1]`, so
  :math:`\lVert \lambda \rVert_2 \le \sqrt K`; near-parallel gradients give no blow-up.
- **Terms that do not reach z**: a term with :math:`M_{ii} \le \tau` (it does not depend on
  :math:`z`, such as a model term on other outputs, or its gradient vanished) is left out of
  the alignment and keeps the factor 1, so its own parameters still train with its weight.
- A non-finite :math:`M` (a non-finite term) gives factors 1 for that batch; the non-finite
  policy of :class:`~lossplug.LossPlugMixin` then decides about the step.
- ``torch.compile``: the backward of a compiled forward is one node, so the path from a head
  to :math:`z` cannot be taken on its own when the encoder and the heads are compiled
  together (a clear error says so); compile them apart (``model.encoder = torch.compile(...)``).

**Why Aligned-MTL and not IMTL-G** (Liu et al. 2021, "Towards Impartial Multi-task Learning",
ICLR): both need only the inner products of the terms' gradients, so both fit a Gram matrix of
the shared representation, and both are scale-invariant. IMTL-G solves a
:math:`(K-1) \times (K-1)` system built from differences of gradients and of their unit
vectors: it is singular when two terms' gradients are parallel or one vanishes (a term that
does not reach :math:`z`, an fp16 underflow), and its factors are unbounded near that.
Aligned-MTL's eigendecomposition truncates a deficient rank by a documented tolerance and its
factors stay within :math:`\sqrt K`, so every batch gives usable weights without a
data-dependent branch.

**Differences from the authors' code** (``SamsungLabs/MTL``, ``AlignedMTLUBBalancer``): the
heads get the weighted gradients too (their ``scale_decoder_grad=True``), as the total
:math:`\sum_i \lambda_i w_i L_i` is what Lightning backpropagates; the tolerance is relative
to the largest diagonal entry rather than the largest eigenvalue; terms that do not reach
:math:`z` keep the factor 1 rather than 0.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.graph import GradientEdge

from lossplug._precision import autocast_off
from lossplug.weighting.base import LearnedWeighting


class AlignedMTL(LearnedWeighting):
    r"""Per-batch factors that align the terms' gradients on the shared representation.

    Selected with ``CompositeLoss(weighting="aligned_mtl", shared=...)`` (in a config
    ``loss.weighting=aligned_mtl loss.shared=features``), ``shared`` naming the model output
    that holds :math:`z`. :meth:`observe` computes the factors of each training batch from the
    Gram matrix of the terms' gradients on :math:`z`; :meth:`factors` returns them, detached,
    until the next batch (validation and the epoch totals use the last training batch's).

    **Cost per training batch**: one backward pass from each term to :math:`z` (through the
    heads only, never the shared layers; the graph is kept for the step's own backward), a
    :math:`K \times \mathrm{numel}(z)` matrix product in float32 or wider with autocast off,
    one :math:`K \times K` eigendecomposition, memory for :math:`K` gradients of :math:`z`,
    and under DDP one ``all_reduce`` of the :math:`K^2` Gram entries: never a gradient of the
    parameters per term.

    **DDP**: each process computes the Gram matrix of its own rows and one ``all_reduce`` sums
    them, so every process gets the same factors. DDP applies the mean over processes of each
    process's gradient, so the per-term gradients the step combines are, on the global batch's
    representation, each process's :math:`g_i` divided by :math:`W`: their Gram matrix is the
    sum over processes divided by :math:`W^2`, which the factors ignore. When the processes'
    terms average over as many items each (Lightning's ``DistributedSampler`` gives every
    process batches of one size), that is also one process's Gram matrix on the global batch,
    so the update equals that process's. The rows a ``DistributedSampler`` repeats to even out
    the processes are in the Gram matrix, as they are in the step: the factors are those of the
    gradients the step applies. Every process must form a training total at every step (as
    DDP's backward requires); the collective does not depend on the data. With
    ``normalize_loss="global"`` and processes whose terms cover different numbers of items, the
    step weighs each process by its count but the summed Gram matrix weighs them alike: the
    factors are then those of the mean over processes, not exactly those of the step.

    **Gradient accumulation**: each micro-batch gets its own factors (its own Gram matrix and
    ``all_reduce``); ``train/loss_weight/{name}`` shows the last micro-batch's.

    Args:
        num_terms: how many terms are weighted.

    Example:
        >>> from lossplug import CompositeLoss
        >>> from lossplug.losses import CrossEntropyLoss, MSELoss
        >>> loss = CompositeLoss(
        ...     {"digit": CrossEntropyLoss(), "ink": MSELoss()},
        ...     inputs={
        ...         "digit": {"pred": "digit", "target": "digit"},
        ...         "ink": {"pred": "ink", "target": "ink"},
        ...     },
        ...     weighting="aligned_mtl",
        ...     shared="features",
        ... )
        >>> z = torch.randn(8, 16, requires_grad=True)  # the shared features of a batch
        >>> out = {"digit": z @ torch.randn(16, 10), "ink": z @ torch.randn(16), "features": z}
        >>> target = {"digit": torch.randint(0, 10, (8,)), "ink": torch.randn(8)}
        >>> loss(out, target).backward()  # the total with this batch's weights
        >>> bool(loss.learned.factors().norm() <= 2**0.5)
        True
    """

    name = "aligned_mtl"
    observes = True
    needs_shared = True

    lambdas: Tensor

    def __init__(self, num_terms: int) -> None:
        super().__init__(num_terms)
        self.register_buffer("lambdas", torch.ones(num_terms))

    def factors(self) -> Tensor:
        r"""The last training batch's :math:`\lambda_i` (1 before the first)."""
        return self.lambdas

    def observe(self, values: Tensor, shared: Tensor | None = None) -> None:
        """Set the factors from the Gram matrix of the terms' gradients on ``shared``.

        Args:
            values: the terms, ``torch.stack``-ed in term order, graph attached: each term is
                differentiated on its own branch of the stack's graph.
            shared: the shared representation :math:`z` the terms depend on.

        Raises:
            ValueError: if ``shared`` is missing or carries no graph, ``values`` is not a
                stack of the terms, or no term depends on ``shared``.
        """
        if shared is None or not shared.requires_grad:
            got = "none" if shared is None else "a tensor that carries no gradient"
            raise ValueError(
                f"{self.name}: observe() needs the batch's shared representation with its "
                f"graph (CompositeLoss option 'shared'), got {got}"
            )
        gram = shared_gram(self.name, values, shared)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(gram)
        self.lambdas.copy_(aligned_factors(gram))


def term_edges(owner: str, values: Tensor) -> list[GradientEdge | None]:
    """The graph edge of each stacked term (``None`` for a term without a graph).

    Raises:
        ValueError: if ``values`` carries a graph that is not one ``torch.stack`` of the terms.
    """
    node = values.grad_fn
    if node is None:
        return [None] * len(values)
    inputs = node.next_functions
    if node.name() != "StackBackward0" or len(inputs) != len(values):
        raise ValueError(
            f"{owner}: observe() differentiates each term on its own and takes the terms as "
            f"torch.stack(terms); got values made by {node.name()}"
        )
    return [None if function is None else GradientEdge(function, nr) for function, nr in inputs]


def shared_gram(owner: str, values: Tensor, shared: Tensor) -> Tensor:
    r"""The Gram matrix :math:`\langle g_i, g_j \rangle` of each term's gradient on ``shared``.

    One backward pass per term from its branch of the stack to ``shared`` (graph kept); the
    products in float32 or wider, autocast off. A term that does not reach ``shared`` has a
    zero row.

    Args:
        owner: the weighting named in messages.
        values: the terms, ``torch.stack``-ed (one dtype), graph attached.
        shared: the shared representation.

    Raises:
        ValueError: if ``values`` is not a stack of the terms, or some term carries a graph but
            none of them depends on ``shared``.
    """
    edges = term_edges(owner, values)
    seed = torch.ones((), dtype=values.dtype, device=values.device)
    gradients = [
        None
        if edge is None
        else torch.autograd.grad([edge], [shared], [seed], retain_graph=True, allow_unused=True)[0]
        for edge in edges
    ]
    if all(gradient is None for gradient in gradients) and any(e is not None for e in edges):
        raise ValueError(
            f"{owner}: no term depends on the shared representation (CompositeLoss option "
            "'shared'); give the model output every head reads, the tensor itself rather than "
            "a copy or a detached one. Under torch.compile, compile the shared layers and the "
            "heads apart (a compiled forward is one node of the graph: no term reaches its "
            "intermediate outputs on its own)"
        )
    dtype = torch.promote_types(shared.dtype, torch.float32)
    rows = [
        shared.new_zeros(shared.numel(), dtype=dtype) if g is None else g.reshape(-1).to(dtype)
        for g in gradients
    ]
    with autocast_off(shared.device):
        matrix = torch.stack(rows)
        return matrix @ matrix.T


def aligned_factors(gram: Tensor) -> Tensor:
    r"""Aligned-MTL's factors :math:`\lambda = B \mathbf 1` from a Gram matrix.

    No value is read on the host here, but ``torch.linalg.eigh`` itself synchronises a CUDA
    device with the host (as torch's documentation says): one sync per training micro-batch.

    Args:
        gram: the :math:`K \times K` Gram matrix of the terms' gradients, float32 or float64.

    Returns:
        The :math:`K` factors, in ``gram``'s dtype: 1 for a term with :math:`M_{ii} \le \tau`
        and for every term when ``gram`` is not finite.
    """
    finite = torch.isfinite(gram).all()
    gram = torch.where(finite, gram, torch.zeros_like(gram))
    diagonal = gram.diagonal()
    tolerance = len(gram) * torch.finfo(gram.dtype).eps * diagonal.max()
    reaches = diagonal > tolerance
    gram = gram * (reaches[:, None] & reaches[None, :])
    eigenvalues, vectors = torch.linalg.eigh(gram)
    kept = eigenvalues > tolerance
    sigma = eigenvalues.clamp(min=0).sqrt()
    sigma_min = torch.where(kept, sigma, torch.inf).amin()
    scale = torch.where(kept, sigma_min / sigma, 0.0)
    factors = vectors @ (scale * vectors.sum(dim=0))  # V diag(scale) V^T 1
    return torch.where(reaches, factors, 1.0)
