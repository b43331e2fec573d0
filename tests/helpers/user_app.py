"""A user's own Hydra app with a LightningModule on lossplug's mixin, and its config.

``APP`` prints ``RESULT {json}``: what it built (loss, mode, optimizer, scheduler) and where
lossplug was imported from.
"""

APP = """
import json

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lossplug
from lossplug.mixin import LossPlugMixin


class Lit(LossPlugMixin, L.LightningModule):
    def __init__(self, loss, optimizer, scheduler=None):
        super().__init__(loss=loss, optimizer=optimizer, scheduler=scheduler)
        self.net = nn.Linear(4, 3)

    def forward(self, x):
        return self.net(x)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    model = Lit(cfg.loss, cfg.optimizer, cfg.scheduler)
    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,))), batch_size=8)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data, data)
    print("RESULT", json.dumps({
        "loss": type(model.criterion).__name__,
        "mode": model.criterion.mode,
        "gamma": model.criterion.gamma,
        "optimizer": type(trainer.optimizers[0]).__name__,
        "initial_lr": trainer.optimizers[0].param_groups[0]["initial_lr"],
        "scheduler": type(trainer.lr_scheduler_configs[0].scheduler).__name__,
        "val_loss_logged": "val/loss/focal" in trainer.callback_metrics,
        "sources": [s.path for s in HydraConfig.get().runtime.config_sources],
        "greeting": cfg.greeting,
        "lossplug": lossplug.__file__,
    }))


main()
"""

CONFIG = """
defaults:
  - loss: focal          # found in lossplug's packaged config groups
  - optimizer: adamw
  - scheduler: cosine
  - _self_

greeting: hello          # the app's own keys live beside them
"""
