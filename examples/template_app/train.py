"""A Hydra app laid out like lightning-hydra-template, with lossplug's groups under ``model``.

    python examples/template_app/train.py
    python examples/template_app/train.py loss@model.loss=focal model.loss.gamma=3
    python examples/template_app/train.py -m model.optimizer.lr=0.01,0.001

The model config is instantiated recursively, as the template does: the loss arrives as a
module, the optimizer and the scheduler as ``functools.partial`` objects that still carry
lossplug's options (``lr_mult``, ``interval``, ...), which the mixin takes out.
"""

import hydra
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug.config import lossplug_main


def loaders(samples: int, batch_size: int) -> tuple[DataLoader, DataLoader]:
    """Three separable classes of 8 features."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (samples,), generator=generator)
    features = torch.randn(samples, 8, generator=generator) + 2.0 * nn.functional.one_hot(labels, 8)
    data = TensorDataset(features, labels)
    return DataLoader(data, batch_size=batch_size, shuffle=True), DataLoader(data, batch_size)


@lossplug_main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    """Instantiate the model recursively, train, and return the last validation loss."""
    model = hydra.utils.instantiate(cfg.model)
    trainer = hydra.utils.instantiate(cfg.trainer)
    trainer.fit(model, *loaders(cfg.data.samples, cfg.data.batch_size))
    val_loss = float(trainer.callback_metrics["val/loss"])
    optimizer = trainer.optimizers[0]
    print(f"loss: {model.criterion!r}")
    rates = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    print(f"optimizer: {type(optimizer).__name__}, initial lr of each group:", *rates)
    print(f"val/loss: {val_loss:.4f}")
    return val_loss


if __name__ == "__main__":
    main()
