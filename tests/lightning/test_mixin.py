"""LossPlugMixin: steps, component logging, built objects, hooks, checkpoints and resuming."""

from __future__ import annotations

import functools
import warnings

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, quiet_trainer, run_python
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug.demo.data import DigitsDataModule
from lossplug.demo.models import Classifier, KNNAccuracy
from lossplug.losses import HuberLoss, MultiTermLoss
from lossplug.mixin import SYNC_ADVICE, LossPlugMixin

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
MSE = {"_target_": "lossplug.losses.MSELoss"}


class Lit(LossPlugMixin, pl.LightningModule):
    def __init__(self, loss, optimizer, scheduler=None, width=8):
        super().__init__(loss=loss, optimizer=optimizer, scheduler=scheduler)
        self.net = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def loader(batch_size=16, dicts=False):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    if dicts:
        return DataLoader(
            [{"features": a, "label": b} for a, b in zip(x, y, strict=True)], batch_size
        )
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


trainer = quiet_trainer


class TwoTerms(MultiTermLoss):
    """Counts how often its components are computed; calling it directly is an error."""

    name = "two_terms"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def components(self, pred, target):
        self.calls += 1
        return {"sq": F.mse_loss(pred, target), "abs": F.l1_loss(pred, target)}

    def forward(self, pred, target):
        raise AssertionError("the mixin must not run the loss a second time")


def test_each_batch_computes_the_components_once_and_logs_total_and_parts():
    criterion = TwoTerms()
    model = Lit(criterion, SGD)
    run = trainer(limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1)
    run.fit(model, loader(), loader(batch_size=64))
    assert criterion.calls == 3  # 2 training batches + 1 validation batch
    metrics = run.callback_metrics
    # per-step components go straight to the loggers (read back in test_loss_logging.py)
    assert {
        "train_step/loss",
        "train/loss",
        "train/loss/abs",
        "val/loss",
        "val/loss/sq",
        "val/loss/abs",
    } <= set(metrics)
    # one validation batch of all 64 samples: the logged parts are the exact losses
    x, y = loader(batch_size=64).dataset.tensors
    with torch.no_grad():
        pred = model(x)
    torch.testing.assert_close(metrics["val/loss/sq"], F.mse_loss(pred, y))
    torch.testing.assert_close(metrics["val/loss/abs"], F.l1_loss(pred, y))
    torch.testing.assert_close(
        metrics["val/loss"], metrics["val/loss/sq"] + metrics["val/loss/abs"]
    )


def test_training_step_returns_the_total_that_is_backpropagated():
    model = Lit(MSE, SGD)
    before = [p.detach().clone() for p in model.parameters()]
    run = trainer(limit_train_batches=1, limit_val_batches=0)
    run.fit(model, loader(batch_size=64))
    x, y = loader(batch_size=64).dataset.tensors
    reference = Lit(MSE, SGD)
    for p, value in zip(reference.parameters(), before, strict=True):
        p.data.copy_(value)
    F.mse_loss(reference(x), y).backward()
    for p, start, trained in zip(reference.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(trained, start - 0.1 * p.grad)


def test_built_objects_work_and_are_not_saved_as_hyperparameters():
    model = Lit(F.smooth_l1_loss, functools.partial(torch.optim.Adam, lr=0.01), width=4)
    assert dict(model.hparams) == {
        "width": 4,
        "scheduler": None,
        "check_inputs": "first",
        "on_nonfinite": "raise",
        "normalize_loss": "batch",
    }
    run = trainer(limit_train_batches=2, limit_val_batches=1)
    run.fit(model, loader(), loader())
    assert "val/loss/smooth_l1_loss" in run.callback_metrics
    assert isinstance(run.optimizers[0], torch.optim.Adam)


def test_a_registered_name_and_a_loss_module_are_accepted():
    assert isinstance(Lit("huber", SGD).criterion, HuberLoss)
    module = HuberLoss(delta=2.0)
    assert Lit(module, SGD).criterion is module


def test_configs_are_saved_as_plain_hyperparameters():
    loss = OmegaConf.create({"_target_": "lossplug.losses.HuberLoss", "delta": "${width}"})
    loss = OmegaConf.create({"width": 3.0, "loss": loss}).loss  # an interpolation into its root
    model = Lit(loss, SGD)
    assert model.hparams["loss"] == {"_target_": "lossplug.losses.HuberLoss", "delta": 3.0}
    assert type(model.hparams["loss"]) is dict
    assert model.criterion.delta == 3.0


def test_split_batch_is_the_one_hook_for_another_batch_layout():
    class DictBatches(Lit):
        def split_batch(self, batch):
            return batch["features"], batch["label"]

    run = trainer(limit_train_batches=2, limit_val_batches=1)
    run.fit(DictBatches(MSE, SGD), loader(dicts=True), loader(dicts=True))
    assert torch.isfinite(run.callback_metrics["val/loss"])


class LearnedScale(MultiTermLoss):
    name = "learned"

    def __init__(self):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()))

    def components(self, pred, target):
        return {"fit": F.mse_loss(pred, target) * self.log_scale.exp(), "reg": -self.log_scale}


def test_learnable_loss_parameters_join_the_optimizer():
    criterion = LearnedScale()
    model = Lit(criterion, SGD)
    optimizer = model.configure_optimizers()
    assert any(p is criterion.log_scale for g in optimizer.param_groups for p in g["params"])
    trainer(limit_train_batches=2, limit_val_batches=0).fit(model, loader())
    assert criterion.log_scale.item() != 0.0


def test_scheduler_settings_reach_lightning():
    plateau = {
        "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "_partial_": True,
        "patience": 0,
        "monitor": "val/loss",
        "interval": "epoch",
    }
    model = Lit(MSE, SGD, plateau)
    model.trainer = trainer()
    configured = model.configure_optimizers()
    assert configured["lr_scheduler"]["monitor"] == "val/loss"
    assert isinstance(
        configured["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau
    )


def digits_classifier():
    return Classifier(
        loss={"_target_": "lossplug.losses.CrossEntropyLoss", "label_smoothing": 0.1},
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.01},
        hidden=[32],
    )


def test_checkpoint_reloads_without_configs_and_predicts_the_same(tmp_path):
    pl.seed_everything(0)
    model = digits_classifier()
    data = DigitsDataModule(batch_size=128)
    run = trainer(limit_train_batches=3, limit_val_batches=1)
    run.fit(model, data)
    path = tmp_path / "model.ckpt"
    run.save_checkpoint(path)

    stored = torch.load(path, weights_only=True)  # plain data only: safe to load
    assert stored["hyper_parameters"]["loss"]["label_smoothing"] == 0.1

    reloaded = Classifier.load_from_checkpoint(path)
    x, _ = data.splits["val"][:]
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x))
    assert reloaded.criterion.label_smoothing == 0.1
    assert reloaded.hparams["hidden"] == [32]


class EpochsRun(Callback):
    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)


def test_resuming_continues_the_epoch_count_and_the_scheduler(tmp_path):
    step = {
        "_target_": "torch.optim.lr_scheduler.StepLR",
        "_partial_": True,
        "step_size": 1,
        "gamma": 0.5,
    }
    first = trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=0,
        enable_checkpointing=True,
        callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)],
    )
    first.fit(Lit(MSE, SGD, step), loader())

    epochs = EpochsRun()
    second = trainer(max_epochs=4, limit_train_batches=2, limit_val_batches=0, callbacks=[epochs])
    second.fit(Lit(MSE, SGD, step), loader(), ckpt_path=tmp_path / "last.ckpt")
    assert epochs.epochs == [2, 3]
    assert second.current_epoch == 4
    scheduler = second.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 4
    assert second.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)


def test_knn_accuracy_matches_a_brute_force_leave_one_out_search():
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(12, 3, generator=generator)
    labels = torch.randint(0, 3, (12,), generator=generator)
    hits = 0
    for i in range(12):
        others = [j for j in range(12) if j != i]
        nearest = min(others, key=lambda j: float((embeddings[i] - embeddings[j]).norm()))
        hits += int(labels[nearest] == labels[i])
    metric = KNNAccuracy()
    metric.update(embeddings[:5], labels[:5])
    metric.update(embeddings[5:], labels[5:])
    assert metric.compute().item() == pytest.approx(hits / 12)


def test_importing_lossplug_leaves_the_warning_filters_alone():
    """The libraries lossplug builds on may add filters when imported; lossplug adds none."""
    script = (
        "import warnings, lightning.pytorch, hydra, torchmetrics, tensorboard, omegaconf\n"
        "before = list(warnings.filters)\n"
        "import lossplug, lossplug.mixin, lossplug.config, lossplug.diagnostics\n"
        "assert warnings.filters == before, [f for f in warnings.filters if f not in before]\n"
    )
    result = run_python("-c", script, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_sync_advice_filter_lives_for_the_run_only():
    """Lightning advises syncing epoch values that lossplug has synced already: quiet during a
    run, and the process's filters are as before once it ends."""
    seen = []

    class Look(Callback):
        def on_train_epoch_end(self, trainer, module):
            seen.append([f for f in warnings.filters if f[1] and f[1].pattern == SYNC_ADVICE])

    before = list(warnings.filters)
    trainer(max_epochs=1, callbacks=[Look()]).fit(Lit(MSE, SGD), loader(), loader())
    assert len(seen) == 1 and len(seen[0]) == 1
    assert warnings.filters == before


def test_a_csv_logger_gets_the_hyperparameters_at_the_start(tmp_path):
    """TensorBoard gets them at the end, with the final metrics; other loggers as before."""
    from lightning.pytorch.loggers import CSVLogger

    seen = []

    class Look(Callback):
        def on_train_epoch_start(self, trainer, module):
            seen.append(dict(trainer.logger.experiment.hparams))

    logger = CSVLogger(tmp_path, name="csv", version=0)
    trainer(max_epochs=1, logger=logger, callbacks=[Look()]).fit(Lit(MSE, SGD), loader())
    assert seen[0]["optimizer"]["lr"] == 0.1  # logged before the first epoch
    assert (
        "_target_: lossplug.losses.MSELoss"
        in (tmp_path / "csv" / "version_0" / "hparams.yaml").read_text()
    )
