r"""The whole batch of every process, for the losses whose items are pairs of samples.

Under data parallelism each process holds a slice of the global batch, so a contrastive or
triplet loss would only pair each sample with its own process's samples.
:func:`gather_batch` concatenates every process's embeddings (keeping their gradient, through
``torch.distributed.nn.all_gather``) and labels, in rank order; each process then computes the
loss of the global batch.

Every process computes the same loss :math:`L`, and the gradient of the gathered copies flows
back to the process that owns them, summed over the processes (:class:`_AllGather`, whose
backward is one ``all_reduce``, which every backend has): rank :math:`r`'s embeddings get
:math:`W \, \partial L / \partial e_r` with :math:`W` processes. Distributed data parallel
training averages the parameters' gradients over the processes, which gives
:math:`\partial L / \partial \theta` exactly, the single-process gradient of the loss of the
concatenated batch: a pair that lives wholly on another process counts once, not once per
process. The processes' batches may differ in size. It costs three collectives per call: the
embeddings' all-gather and two small ones for the sizes and the labels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class _AllGather(torch.autograd.Function):
    """Every process's equally sized tensor, stacked in rank order; the gradient flows back.

    The backward sums the gathered copies' gradients over the processes and hands each process
    the slice of its own tensor.
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def gather_batch(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every process's ``(embeddings, labels)``, concatenated in rank order.

    Outside a process group of more than one process, the inputs come back as they are.

    Args:
        embeddings: this process's ``(B_r, D)`` embeddings.
        labels: this process's ``(B_r,)`` labels.

    Returns:
        ``(embeddings, labels)`` of the global batch: the embeddings carry the gradient back
        to every process's own.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeddings, labels
    size = torch.tensor([len(labels)], device=labels.device)
    sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    counts = [int(count) for count in sizes]
    longest = max(counts)
    padding = longest - len(labels)
    padded = torch.cat([embeddings, embeddings.new_zeros(padding, *embeddings.shape[1:])])
    gathered = _AllGather.apply(padded)
    label_parts = [labels.new_empty(longest, *labels.shape[1:]) for _ in counts]
    dist.all_gather(label_parts, torch.cat([labels, labels.new_zeros(padding)]))
    return (
        torch.cat([part[:count] for part, count in zip(gathered, counts, strict=True)]),
        torch.cat([part[:count] for part, count in zip(label_parts, counts, strict=True)]),
    )
