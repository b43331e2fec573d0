"""A small multi-task model for the Aligned-MTL tests, and the reference they compare with.

:class:`TwoHeads` is a shared encoder ``z = tanh(x W^T + b)`` (the output ``"features"``) read
by a regression head (``"value"``, mean squared error) and a 3-class head (``"logits"``,
cross-entropy), in float64, trained with SGD. The reference (:func:`reference_steps`) replays
training in one process with ``torch.nn.functional``, ``torch.autograd`` for each term's
gradient on ``z`` and numpy's SVD for Aligned-MTL: for the terms' gradients as the columns of
``G^T = U S V^T``, the aligned gradients are ``s_min U V^T`` (Senushkin et al. 2023, the
orthogonal Procrustes solution scaled to the smallest singular value), and their sum is
``G^T alpha`` with ``alpha = s_min V S^-1 V^T 1``; nothing of lossplug's weighting is used.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import CompositeLoss, LossPlugMixin
from lossplug.losses import CrossEntropyLoss, MSELoss

LR = 0.3
TERMS = ("value", "class")
ROUTES = {
    "value": {"pred": "value", "target": "value"},
    "class": {"pred": "logits", "target": "class"},
}


def aligned_loss(**options: object) -> CompositeLoss:
    """The two terms, each on its head, Aligned-MTL on ``"features"``."""
    return CompositeLoss(
        {"value": MSELoss(), "class": CrossEntropyLoss()},
        inputs=ROUTES,
        weighting="aligned_mtl",
        shared="features",
        **options,
    )


def dataset(size: int, dtype: torch.dtype = torch.float64) -> TensorDataset:
    """Inputs, a regression target on a larger scale and class labels that partly conflict."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(size, 4, generator=generator, dtype=dtype)
    value = 3.0 * x[:, 0] - x[:, 1] + 0.5 * torch.randn(size, generator=generator, dtype=dtype)
    label = (x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    return TensorDataset(x, value, label)


class TwoHeads(LossPlugMixin, L.LightningModule):
    """The encoder and two heads; ``loss`` defaults to :func:`aligned_loss`."""

    def __init__(
        self, loss: object = None, optimizer: object = None, data: TensorDataset | None = None
    ) -> None:
        super().__init__(
            loss=aligned_loss() if loss is None else loss,
            optimizer=optimizer or (lambda params: torch.optim.SGD(params, lr=LR)),
        )
        torch.manual_seed(0)
        self.encoder = nn.Linear(4, 3)
        self.value_head = nn.Linear(3, 1)
        self.class_head = nn.Linear(3, 3)
        self.data = data

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = torch.tanh(self.encoder(x))
        value = self.value_head(z).squeeze(-1)
        return {"value": value, "logits": self.class_head(z), "features": z}

    def split_batch(self, batch: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, value, label = batch
        return x, {"value": value, "class": label}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=6)


def initial_params() -> dict[str, Tensor]:
    """The parameters :class:`TwoHeads` starts from, in float64."""
    model = TwoHeads(loss=aligned_loss())
    return {name: p.detach().double().clone() for name, p in model.named_parameters()}


def _terms(params: dict[str, Tensor], x: Tensor, value: Tensor, label: Tensor):
    z = torch.tanh(F.linear(x, params["encoder.weight"], params["encoder.bias"]))
    pred = F.linear(z, params["value_head.weight"], params["value_head.bias"]).squeeze(-1)
    logits = F.linear(z, params["class_head.weight"], params["class_head.bias"])
    return z, [F.mse_loss(pred, value), F.cross_entropy(logits, label)]


def procrustes_weights(gradients: np.ndarray) -> np.ndarray:
    """alpha with ``G^T alpha`` the aligned gradients' sum; ``gradients``: ``(K, n)``, full rank."""
    _, s, vt = np.linalg.svd(gradients.T, full_matrices=False)
    assert s.min() > 1e-10 * s.max()  # the cases here are of full rank
    return s.min() * vt.T @ np.diag(1.0 / s) @ vt @ np.ones(len(s))


def reference_weights(params: dict[str, Tensor], batch: tuple[Tensor, ...]) -> np.ndarray:
    """Aligned-MTL's weights of one batch (rows as given, repeats included)."""
    params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    z, terms = _terms(params, *batch)
    rows = [torch.autograd.grad(term, z, retain_graph=True)[0].reshape(-1) for term in terms]
    return procrustes_weights(torch.stack(rows).numpy())


def _norms(weights: np.ndarray, terms: list[Tensor], params: list[Tensor]) -> list[float]:
    """Each weighted term's gradient norm on ``params`` (a term may skip a head)."""
    norms = []
    for weight, term in zip(weights, terms, strict=True):
        grads = torch.autograd.grad(weight * term, params, retain_graph=True, allow_unused=True)
        norms.append(torch.cat([g.reshape(-1) for g in grads if g is not None]).norm().item())
    return norms


def reference_steps(
    steps: list[list[tuple[Tensor, ...]]], lr: float = LR
) -> tuple[list[dict[str, object]], dict[str, Tensor]]:
    """SGD in one process, each step on the mean over its micro-batches of ``sum_i alpha_i L_i``.

    ``steps`` holds each optimizer step's micro-batches; every micro-batch has its own weights
    ``alpha``, from the parameters of its step. Returns a record per micro-batch, in order (its
    weights and, per term, the norm of the gradient of ``alpha_i L_i`` on every parameter: what
    gradient diagnostics log), and the parameters after the last step.
    """
    params = initial_params()
    records = []
    for micro_batches in steps:
        leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
        mean = 0.0
        for batch in micro_batches:
            weights = reference_weights(params, batch)
            _, terms = _terms(leaves, *batch)
            norms = _norms(weights, terms, list(leaves.values()))
            records.append({"weights": weights.tolist(), "norms": norms})
            total = sum(weight * term for weight, term in zip(weights, terms, strict=True))
            mean = mean + total / len(micro_batches)
        grads = torch.autograd.grad(mean, list(leaves.values()))
        params = {
            name: (p - lr * g).detach() for (name, p), g in zip(params.items(), grads, strict=True)
        }
    return records, params
