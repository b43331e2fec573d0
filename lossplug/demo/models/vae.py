r"""A small variational autoencoder (Kingma & Welling 2014) whose KL term the model computes.

It shows a loss term that comes from the model rather than from ``(pred, target)``: the
encoder's KL divergence, returned by :meth:`VAE.model_terms` and declared by the loss
(``CompositeLoss(..., model_terms=["kl"])``, the packaged ``loss=vae``), which gives it a
weight (``loss.weights.kl``) and logs it as ``{stage}/loss/kl`` beside the reconstruction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lossplug.demo.models.nets import MLP
from lossplug.mixin import LossPlugMixin

#: what :meth:`VAE.forward` returns: the reconstruction and the model's terms by name.
VAEOutput = tuple[Tensor, dict[str, Tensor]]


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    r"""Per-sample KL divergence of :math:`\mathcal N(\mu, \sigma^2)` from :math:`\mathcal N(0, I)`.

    .. math::

        \mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)
        = -\tfrac12 \sum_j \big(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\big)

    (Kingma & Welling 2014, appendix B).

    Args:
        mu: the posterior means ``(B, D)``.
        logvar: the posterior log-variances :math:`\log\sigma^2`, ``(B, D)``.

    Returns:
        One value per sample, ``(B,)``, summed over the ``D`` latent dimensions.
    """
    return -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1)


class VAE(LossPlugMixin, pl.LightningModule):
    r"""A variational autoencoder of flat inputs in ``[0, 1]`` (the digits' 64 pixels).

    The encoder (an :class:`~lossplug.demo.models.MLP`) gives each sample's posterior mean
    :math:`\mu` and log-variance :math:`\log\sigma^2`; the decoder maps a latent code back to
    the inputs through a sigmoid. In training the code is sampled by reparameterisation,
    :math:`z = \mu + \sigma \odot \varepsilon` with :math:`\varepsilon \sim \mathcal N(0, I)`;
    in evaluation :math:`z = \mu`, so validation and test are deterministic. The loss
    compares the reconstruction with the input (the batch's ``(inputs, labels)``: the labels
    are not used) and takes the per-sample KL divergence of :func:`gaussian_kl` as the model
    term ``kl``, so it must declare it (``model_terms: [kl]``; see ``conf/loss/vae.yaml``).

    Args:
        loss: the loss (config or object), see :class:`~lossplug.LossPlugMixin`; a
            :class:`~lossplug.CompositeLoss` declaring the model term ``kl``.
        optimizer: the optimizer (config or factory).
        scheduler: the scheduler (config, factory or ``None``).
        in_features: input size.
        hidden: hidden widths of the encoder; the decoder uses them in reverse.
        latent_dim: size of the latent code.
        check_inputs: when input values are checked, see :class:`~lossplug.LossPlugMixin`.
        on_nonfinite: what a NaN or infinite loss does, see :class:`~lossplug.LossPlugMixin`.
        normalize_loss: the mean each micro-batch backpropagates, see
            :class:`~lossplug.LossPlugMixin`.
    """

    def __init__(
        self,
        loss: Any,
        optimizer: Any,
        scheduler: Any = None,
        in_features: int = 64,
        hidden: Sequence[int] = (128,),
        latent_dim: int = 8,
        check_inputs: str = "first",
        on_nonfinite: str = "raise",
        normalize_loss: str = "batch",
    ) -> None:
        super().__init__(
            loss=loss,
            optimizer=optimizer,
            scheduler=scheduler,
            check_inputs=check_inputs,
            on_nonfinite=on_nonfinite,
            normalize_loss=normalize_loss,
        )
        self.encoder = MLP(in_features, hidden)
        self.posterior = nn.Linear(self.encoder.out_features, 2 * latent_dim)
        expand = MLP(latent_dim, list(reversed(hidden)))
        self.decoder = nn.Sequential(
            expand, nn.Linear(expand.out_features, in_features), nn.Sigmoid()
        )
        self.latent_dim = latent_dim

    def encode(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's mean and log-variance, each ``(N, latent_dim)``."""
        mu, logvar = self.posterior(self.encoder(inputs)).chunk(2, dim=1)
        return mu, logvar

    def forward(self, inputs: Tensor) -> VAEOutput:
        """The reconstruction ``(N, in_features)`` and ``{"kl": per-sample KL (N,)}``."""
        mu, logvar = self.encode(inputs)
        z = mu
        if self.training:
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        return self.decoder(z), {"kl": gaussian_kl(mu, logvar)}

    def split_batch(self, batch: Any) -> tuple[Tensor, Tensor]:
        """The inputs, twice: the target of an autoencoder is its input (labels unused)."""
        inputs = batch[0]
        return inputs, inputs

    def loss_inputs(self, output: VAEOutput, target: Tensor) -> tuple[Tensor, Tensor]:
        """The reconstruction and the input it should match."""
        return output[0], target

    def model_terms(self, output: VAEOutput) -> Mapping[str, Tensor]:
        """The KL divergence of each sample, ``{"kl": (N,)}``."""
        return output[1]
