"""A variational autoencoder whose KL divergence joins the loss as a term the model computes.

The class is the README's example; ``main`` trains it on scikit-learn's bundled digits.
"""

from typing import Any

import lightning as L
import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset, random_split

from lossplug import LossPlugMixin


class LitVAE(LossPlugMixin, L.LightningModule):
    """Reconstruction loss from the loss config, the KL from the model."""

    def __init__(self, loss: Any, optimizer: Any, latent: int = 8) -> None:
        super().__init__(loss=loss, optimizer=optimizer)
        self.encoder = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, 64))

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The reconstruction and the KL divergence of each sample's posterior from N(0, I)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)  # one value per sample
        return self.decoder(z), {"kl": kl}

    def loss_inputs(self, output: Any, target: Tensor) -> tuple[Tensor, Tensor]:
        """The loss terms get the reconstruction."""
        return output[0], target

    def model_terms(self, output: Any) -> dict[str, Tensor]:
        """The terms the model computed."""
        return output[1]


LOSS = {  # what loss=vae gives in a Hydra app
    "_target_": "lossplug.CompositeLoss",
    "terms": {"recon": "mse"},
    "model_terms": ["kl"],
    "weights": {"kl": 0.003},
}


def main(max_epochs: int = 10) -> dict[str, float]:
    """Train on the digits; the final metrics."""
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16
    data = TensorDataset(images, images)  # (input, target): the target is the input
    train, val = random_split(data, [0.8, 0.2], generator=torch.Generator().manual_seed(0))
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.003}
    model = LitVAE(loss=LOSS, optimizer=optimizer)
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False)
    trainer.fit(model, DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, 256))
    return {key: value.item() for key, value in trainer.callback_metrics.items()}


if __name__ == "__main__":
    print(main())
