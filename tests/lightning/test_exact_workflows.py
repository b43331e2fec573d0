"""Exact epoch values in every order of trainer calls, precision, accumulation and loader set.

Each logged value is compared with the loss recomputed over the whole dataset in one process
(``torch.nn.functional``, float64; see ``exact_modules``).
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import quiet_trainer
from exact_modules import Classifier, classes, cross_entropy_over, loader
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn

import lossplug
from lossplug import ConfigError, LossPlugMixin

TRAIN, VAL, TEST = classes(70, seed=1), classes(45, seed=2), classes(33, seed=3)


def _val_loss(trainer: L.Trainer) -> float:
    return trainer.callback_metrics["val/loss"].item()


def test_validate_then_fit():
    model, trainer = Classifier(lr=0.1), quiet_trainer(max_epochs=2)
    trainer.validate(model, loader(VAL, 16))
    assert _val_loss(trainer) == pytest.approx(cross_entropy_over(model, VAL), rel=1e-6)
    trainer.fit(model, loader(TRAIN, 16), loader(VAL, 16))
    assert _val_loss(trainer) == pytest.approx(cross_entropy_over(model, VAL), rel=1e-6)


def test_fit_validate_fit_again_test():
    model = Classifier(lr=0.1)
    quiet_trainer().fit(model, loader(TRAIN, 16), loader(VAL, 16))
    trainer = quiet_trainer()
    trainer.validate(model, loader(VAL, 20))
    assert _val_loss(trainer) == pytest.approx(cross_entropy_over(model, VAL), rel=1e-6)
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, loader(TRAIN, 16), loader(VAL, 16))
    assert _val_loss(trainer) == pytest.approx(cross_entropy_over(model, VAL), rel=1e-6)
    trainer.test(model, loader(TEST, 16))
    expected = cross_entropy_over(model, TEST)
    assert trainer.callback_metrics["test/loss"].item() == pytest.approx(expected, rel=1e-6)


def test_standalone_test():
    model, trainer = Classifier(), quiet_trainer()
    trainer.test(model, loader(TEST, 10))
    expected = cross_entropy_over(model, TEST)
    assert trainer.callback_metrics["test/loss"].item() == pytest.approx(expected, rel=1e-6)
    assert "val/loss" not in trainer.callback_metrics


def test_resume_from_a_checkpoint(tmp_path):
    model = Classifier(lr=0.1)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    quiet_trainer(callbacks=[checkpoint], enable_checkpointing=True).fit(
        model, loader(TRAIN, 16), loader(VAL, 16)
    )
    resumed, trainer = Classifier(lr=0.1), quiet_trainer(max_epochs=2)
    trainer.fit(resumed, loader(TRAIN, 16), loader(VAL, 16), ckpt_path=tmp_path / "last.ckpt")
    assert trainer.current_epoch == 2
    assert _val_loss(trainer) == pytest.approx(cross_entropy_over(resumed, VAL), rel=1e-6)


def test_several_validation_loaders_get_their_own_values_one_keeps_the_plain_tag():
    model, trainer = Classifier(), quiet_trainer()
    trainer.validate(model, [loader(VAL, 16), loader(TEST, 7)])
    metrics = trainer.callback_metrics
    for k, data in enumerate((VAL, TEST)):
        expected = cross_entropy_over(model, data)
        assert metrics[f"val/loss/dataloader_idx_{k}"].item() == pytest.approx(expected, rel=1e-6)
        key = f"val/loss/cross_entropy/dataloader_idx_{k}"
        assert metrics[key].item() == pytest.approx(expected, rel=1e-6)
    assert "val/loss" not in metrics


def test_a_loader_without_batches_logs_nothing():
    model, trainer = Classifier(), quiet_trainer(limit_val_batches=0)
    trainer.fit(model, loader(TRAIN, 16), loader(VAL, 16))
    assert "train/loss" in trainer.callback_metrics
    assert "val/loss" not in trainer.callback_metrics


# -- precision ----------------------------------------------------------------------------

BIG_VAL = classes(4096, seed=4)
PRECISIONS = ["bf16-true", "16-true", "64-true", "bf16-mixed", "16-mixed"]
INPUT_DTYPES = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}
# Lightning runs "16-mixed" as "bf16-mixed" on the CPU (AMP with float16 needs a GPU)
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.bfloat16}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_any_precision_gives_the_float64_mean_within_float32_rounding(precision):
    model = Classifier()
    trainer = quiet_trainer(precision=precision)
    trainer.validate(model, loader(BIG_VAL, 100))
    logged = trainer.callback_metrics["val/loss"].item()
    # the reference: the same model outputs, batch by batch as the trainer made them, with
    # the loss taken in float64 over all 4,096 samples
    logits = []
    with torch.no_grad():
        for x, _ in loader(BIG_VAL, 100):
            if precision in AUTOCAST:
                with torch.autocast("cpu", dtype=AUTOCAST[precision]):
                    logits.append(model(x))
            else:
                logits.append(model(x.to(INPUT_DTYPES[precision])))
    expected = F.cross_entropy(torch.cat(logits).double(), BIG_VAL.tensors[1]).item()
    assert logged == pytest.approx(expected, rel=1e-6)


def test_the_epoch_state_stays_float64_when_the_module_is_cast():
    model = Classifier().to(torch.bfloat16)
    assert {metric.totals.dtype for metric in model.loss_metrics.values()} == {torch.float64}


# -- gradient accumulation ----------------------------------------------------------------


def test_accumulation_writes_one_point_per_optimizer_step_the_step_s_mean(tmp_path):
    model = Classifier()  # lr 0: every step's reference is the loss over its samples
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = quiet_trainer(logger=logger, accumulate_grad_batches=4, log_every_n_steps=1)
    trainer.fit(model, loader(TRAIN, 8))  # 9 batches: optimizer steps of 4, 4 and 1
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    x, y = TRAIN.tensors
    with torch.no_grad():
        per_sample = F.cross_entropy(model(x).double(), y, reduction="none")
    expected = [part.mean().item() for part in per_sample.split(32)]
    for tag in ("train_step/loss", "train_step/loss/cross_entropy"):
        points = events.Scalars(tag)
        assert [point.step for point in points] == [0, 1, 2]
        assert [point.value for point in points] == pytest.approx(expected, rel=1e-6)


# -- terms the model computes -------------------------------------------------------------


class LitVAE(LossPlugMixin, L.LightningModule):
    def __init__(self, loss, optimizer, per_sample: bool = True):
        super().__init__(loss=loss, optimizer=optimizer)
        self.encoder, self.decoder = nn.Linear(8, 2 * 3), nn.Linear(3, 8)
        self.per_sample = per_sample

    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)
        return self.decoder(z), {"kl": kl if self.per_sample else kl.mean()}

    def split_batch(self, batch):
        return batch[0], batch[0]

    def loss_inputs(self, output, target):
        return output[0], target

    def model_terms(self, output):
        return output[1]


VAE_LOSS = {
    "_target_": "lossplug.CompositeLoss",
    "terms": {"recon": "mse"},
    "model_terms": ["kl"],
    "weights": {"kl": 0.1},
}
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01}


@pytest.mark.parametrize("per_sample", [True, False], ids=["per-sample", "scalar"])
def test_a_term_the_model_computes_is_weighted_logged_and_exact(per_sample):
    model = LitVAE(VAE_LOSS, SGD, per_sample=per_sample)
    trainer = quiet_trainer()
    trainer.fit(model, loader(TRAIN, 16), loader(VAL, 16))  # 45 samples: 16, 16, 13
    x = VAL.tensors[0].double()
    with torch.no_grad():
        mu, logvar = model.encoder.double()(x).chunk(2, dim=1)
        kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)).mean().item()
        recon = F.mse_loss(model.decoder.double()(mu), x).item()
    metrics = trainer.callback_metrics
    assert metrics["val/loss/kl"].item() == pytest.approx(kl, rel=1e-5)
    assert metrics["val/loss/recon"].item() == pytest.approx(recon, rel=1e-5)
    assert metrics["val/loss"].item() == pytest.approx(recon + 0.1 * kl, rel=1e-5)
    assert "train/loss/kl" in metrics


def test_a_term_the_loss_does_not_declare_is_refused_with_the_fix():
    model = LitVAE({"_target_": "lossplug.losses.MSELoss"}, SGD)
    with pytest.raises(ValueError, match=r"model_terms: \['kl'\] \(and weights.kl\)"):
        quiet_trainer().fit(model, loader(TRAIN, 16))


def test_a_declared_term_the_model_does_not_give_is_refused():
    model = LitVAE(VAE_LOSS, SGD)
    model.model_terms = lambda output: {}
    with pytest.raises(ValueError, match=r"declares model term\(s\) \['kl'\]"):
        quiet_trainer().fit(model, loader(TRAIN, 16))


class DictOutput(Classifier):
    """A two-head model whose custom term reads the whole dict output."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        logits = self.net(x)
        return {"logits": logits, "aux": logits.pow(2).mean(dim=1)}


def _aux_mean(pred: dict[str, Tensor], target: Tensor) -> Tensor:
    return pred["aux"].mean()


def test_dict_outputs_never_break_the_counting():
    loss = lossplug.CompositeLoss(
        {"ce": "cross_entropy", "aux": _aux_mean}, inputs={"ce": {"pred": "logits"}}
    )
    model, trainer = DictOutput(loss=loss), quiet_trainer()
    trainer.validate(model, loader(VAL, 16))
    x, y = VAL.tensors
    with torch.no_grad():
        logits = model.net(x).double()
    metrics = trainer.callback_metrics
    ce = F.cross_entropy(logits, y).item()
    assert metrics["val/loss/ce"].item() == pytest.approx(ce, rel=1e-6)
    aux = logits.pow(2).mean(dim=1).mean().item()
    assert metrics["val/loss/aux"].item() == pytest.approx(aux, rel=1e-6)


# -- reduction ----------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_a_reduction_other_than_mean_is_refused_naming_the_option(reduction):
    with pytest.raises(ConfigError, match=rf"loss.reduction='{reduction}' is not supported"):
        Classifier(loss={"_target_": "lossplug.losses.MSELoss", "reduction": reduction})
    composite = {
        "_target_": "lossplug.CompositeLoss",
        "terms": {"dice": {"_target_": "lossplug.losses.DiceLoss", "reduction": reduction}},
    }
    with pytest.raises(ConfigError, match=rf"loss.terms.dice.reduction='{reduction}'"):
        Classifier(loss=composite)
