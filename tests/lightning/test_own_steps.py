"""Own steps: nothing fake is logged, a user's key is never overwritten, and ``compute_loss``
keeps every guarantee (non-finite policy, input checks, exact counts, diagnostics), manual
optimization included."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import quiet_trainer
from exact_modules import Classifier, classes, cross_entropy_over, loader, sgd
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

import lossplug
from lossplug import LossPlugMixin, NonFiniteLossError
from lossplug.diagnostics import GradientDiagnostics

TRAIN, VAL = classes(70, seed=1), classes(45, seed=2)


class OwnSteps(Classifier):
    """Its own training and validation steps, which never reach the loss metric."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/own", F.cross_entropy(self(x), y))


def test_a_stage_whose_batches_never_reach_the_loss_logs_no_loss(tmp_path):
    trainer = quiet_trainer(logger=TensorBoardLogger(tmp_path, name="tb", version=0))
    trainer.fit(OwnSteps(lr=0.1), loader(TRAIN, 16), loader(VAL, 16))
    assert not [key for key in trainer.callback_metrics if "loss" in key.split("/")[-1]]
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    events.Reload()
    assert "val/own" in events.Tags()["scalars"]
    assert not {"train/loss", "val/loss", "train/loss/cross_entropy"} & set(
        events.Tags()["scalars"]
    )


class LogsItsOwnLoss(Classifier):
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.compute_loss(self(x), y)
        self.log("train/loss", 123.0, on_step=False, on_epoch=True)
        return loss


def test_lossplug_never_overwrites_a_key_the_user_logs():
    trainer = quiet_trainer()
    with pytest.warns(UserWarning, match="you log 'train/loss' yourself"):
        trainer.fit(LogsItsOwnLoss(), loader(TRAIN, 16))
    assert trainer.callback_metrics["train/loss"].item() == 123.0
    model = trainer.lightning_module
    expected = cross_entropy_over(model, TRAIN)
    assert trainer.callback_metrics["train/loss/cross_entropy"].item() == pytest.approx(expected)


class OwnStepWithComputeLoss(Classifier):
    nan_batch = -1

    def training_step(self, batch, batch_idx):
        x, y = batch
        scale = float("nan") if batch_idx == self.nan_batch else 1.0
        return self.compute_loss(self(x) * scale, y)


def test_compute_loss_in_an_own_step_applies_the_nonfinite_policy():
    model = OwnStepWithComputeLoss(lr=0.1)
    model.nan_batch = 2  # the input checks look at batch 0 only
    with pytest.raises(NonFiniteLossError, match="training loss at epoch 0, batch 2"):
        quiet_trainer(log_every_n_steps=50).fit(model, loader(TRAIN, 16))


def test_compute_loss_in_an_own_step_checks_the_inputs():
    model = Classifier()
    model.training_step = lambda batch, batch_idx: model.compute_loss(
        model(batch[0]).softmax(1), batch[1]
    )
    with pytest.raises(lossplug.InputMisuseError, match="remove the softmax"):
        quiet_trainer().fit(model, loader(TRAIN, 16))


def test_compute_loss_hands_the_components_to_gradient_diagnostics():
    loss = lossplug.CompositeLoss(
        {"ce": "cross_entropy", "focal": lossplug.build_loss("focal", mode="multiclass")}
    )
    model = OwnStepWithComputeLoss(loss=loss)
    trainer = quiet_trainer(callbacks=[GradientDiagnostics(every_n_steps=1)])
    trainer.fit(model, loader(TRAIN, 16))
    assert {"train/grad_norm/ce", "train/grad_norm/focal", "train/grad_cosine/ce__focal"} <= set(
        trainer.callback_metrics
    )


class Gan(LossPlugMixin, L.LightningModule):
    """A toy GAN: manual optimization, two optimizers and a criterion each."""

    def __init__(self, on_nonfinite: str = "raise") -> None:
        super().__init__(loss="bce", optimizer=sgd(), on_nonfinite=on_nonfinite)
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.generator = nn.Linear(8, 8)
        self.discriminator = nn.Linear(8, 1)
        self.register_criterion("d_loss")  # the mixin's criterion (bce) under its own name
        self.register_criterion("g_loss", "bce")

    def training_step(self, batch, batch_idx):
        real, _ = batch
        d_opt, g_opt = self.optimizers()
        fake = self.generator(real)  # the batch as noise: a deterministic toy
        logits = self.discriminator(torch.cat([real, fake.detach()])).squeeze(1)
        labels = torch.cat([torch.ones(len(real)), torch.zeros(len(real))])
        d_loss = self.compute_loss(logits, labels, name="d_loss")
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        g_logits = self.discriminator(fake).squeeze(1)
        g_loss = self.compute_loss(g_logits, torch.ones(len(real)), name="g_loss")
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()

    def configure_optimizers(self):
        return [
            torch.optim.SGD(self.discriminator.parameters(), lr=0.0),
            torch.optim.SGD(self.generator.parameters(), lr=0.0),
        ]


def test_a_gan_with_two_criteria_logs_each_exactly(tmp_path):
    model = Gan()
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = quiet_trainer(logger=logger, log_every_n_steps=1)
    trainer.fit(model, loader(TRAIN, 16))  # 70 samples: batches of 16, 16, 16, 16, 6
    real = TRAIN.tensors[0]
    with torch.no_grad():
        fake = model.generator(real)
        d_logits = model.discriminator(torch.cat([real, fake])).squeeze(1).double()
        g_logits = model.discriminator(fake).squeeze(1).double()
    labels = torch.cat([torch.ones(70), torch.zeros(70)]).double()
    d_expected = F.binary_cross_entropy_with_logits(d_logits, labels).item()
    g_expected = F.binary_cross_entropy_with_logits(g_logits, torch.ones(70).double()).item()
    metrics = trainer.callback_metrics
    assert metrics["train/d_loss"].item() == pytest.approx(d_expected, rel=1e-6)
    assert metrics["train/d_loss/bce"].item() == pytest.approx(d_expected, rel=1e-6)
    assert metrics["train/g_loss"].item() == pytest.approx(g_expected, rel=1e-6)
    assert "train/loss" not in metrics  # the default name was never used
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    steps = [event.step for event in events.Scalars("train_step/g_loss/bce")]
    assert len(steps) == len(set(steps)) == 5  # one point a training step


def test_skip_under_manual_optimization_is_refused_before_training_with_the_fix():
    with pytest.raises(ValueError, match=r"on_nonfinite='skip'.*manual optimization.*isfinite"):
        quiet_trainer().fit(Gan(on_nonfinite="skip"), loader(TRAIN, 16))


def test_a_name_without_a_registered_criterion_says_how_to_register_one():
    model = Classifier()
    model.training_step = lambda batch, batch_idx: model.compute_loss(
        model(batch[0]), batch[1], name="aux"
    )
    with pytest.raises(ValueError, match=r"self.register_criterion\('aux', loss\)"):
        quiet_trainer().fit(model, loader(TRAIN, 16))


@pytest.mark.parametrize("name", ["loss", "", "a/b"])
def test_register_criterion_refuses_a_taken_or_unusable_name(name):
    with pytest.raises(ValueError, match="must be new, non-empty and without '/'"):
        Classifier().register_criterion(name, "mse")


def test_compute_loss_outside_a_stage_asks_for_one():
    model = Classifier()
    model.trainer = L.Trainer(logger=False)
    x, y = TRAIN.tensors
    with pytest.raises(RuntimeError, match="pass stage="):
        model.compute_loss(model(x), y)


def _class_index_error_batch(batch_idx: int) -> Tensor:
    return torch.tensor([7] + [0] * 15) if batch_idx == 2 else torch.zeros(16, dtype=torch.long)


def test_a_class_index_out_of_range_on_an_unchecked_batch_gets_lossplug_s_message():
    class BadThirdBatch(Classifier):
        def training_step(self, batch, batch_idx):
            x, _ = batch
            return self.compute_loss(self(x), _class_index_error_batch(batch_idx))

    match = r"^cross_entropy: class index 7 in 'target' is out of range for 4 classes"
    with pytest.raises(ValueError, match=match):  # check_inputs='first' checked batch 0 only
        quiet_trainer().fit(BadThirdBatch(lr=0.1), loader(TRAIN, 16))


def test_predict_takes_inputs_and_target_batches():
    model = Classifier()
    predictions = quiet_trainer().predict(model, loader(VAL, 16))
    with torch.no_grad():
        expected = model(VAL.tensors[0])
    torch.testing.assert_close(torch.cat(predictions), expected)


# -- a sampler that repeats samples, in one process: rank 1 of 2 --------------------------

NINE = classes(9, seed=5)  # rank 1 of 2 gets samples 1, 3, 5, 7 and a repeat of 0


def _rank_one_of_two(data, batch_size: int = 4):
    sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=False)
    return loader(data, batch_size, sampler=sampler)


class CountsMetricCalls(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.metric_batches: list[int] = []

    def update_metrics(self, stage, output, target):
        self.metric_batches.append(len(target))


def test_a_batch_of_repeats_alone_adds_nothing_but_still_reaches_the_user_s_metrics():
    model, trainer = CountsMetricCalls(), quiet_trainer()
    trainer.validate(model, _rank_one_of_two(NINE))
    x, y = NINE.tensors
    with torch.no_grad():
        expected = F.cross_entropy(model(x[1::2]).double(), y[1::2]).item()
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(expected, rel=1e-6)
    assert model.metric_batches == [4, 1]  # the batch as Lightning gives it, every batch


class TokenModel(Classifier):
    """Three 'tokens' a sample: the loss inputs have 3 rows per sample."""

    def loss_inputs(self, output, target):
        return output.repeat_interleave(3, dim=0), target.repeat_interleave(3)


def test_loss_inputs_not_one_row_per_sample_warn_that_repeats_count():
    model, trainer = TokenModel(), quiet_trainer()
    with pytest.warns(UserWarning, match=r"6 rows for a batch of 2 samples, so the 1 sample"):
        trainer.validate(model, _rank_one_of_two(NINE, batch_size=3))  # batches 3, 2 (1 real)
    x, y = NINE.tensors
    with torch.no_grad():
        expected = F.cross_entropy(model(x[[1, 3, 5, 7, 0]]).double(), y[[1, 3, 5, 7, 0]])
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(expected.item(), rel=1e-6)


class LogsValLossItself(Classifier):
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.log("val/loss", 123.0)
        return super().validation_step(batch, batch_idx, dataloader_idx)


def test_a_user_key_is_left_to_the_user_on_every_loader():
    model, trainer = LogsValLossItself(), quiet_trainer()
    with pytest.warns(UserWarning, match="you log 'val/loss/dataloader_idx_0' yourself"):
        trainer.validate(model, [loader(VAL, 16), loader(TRAIN, 16)])
    for k in (0, 1):
        assert trainer.callback_metrics[f"val/loss/dataloader_idx_{k}"].item() == 123.0


class LogsAfterSuper(Classifier):
    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        self.log("val/loss", 1.0)


def test_logging_lossplug_s_key_after_super_says_what_to_do():
    with pytest.raises(ValueError, match=r"'val/loss' holds lossplug's exact epoch value.*before"):
        quiet_trainer().validate(LogsAfterSuper(), loader(VAL, 16))


class LearnsItsNames(lossplug.LossModule):
    """A loss whose component names are known only from its first batch."""

    name = "learns"

    def forward(self, pred, target):
        return F.cross_entropy(pred, target)

    def components(self, pred, target):
        return {"ce": self(pred, target)}


def test_a_batch_of_repeats_alone_sizes_the_state_but_logs_nothing():
    model, trainer = Classifier(loss=LearnsItsNames()), quiet_trainer()
    trainer.validate(model, _rank_one_of_two(classes(1, seed=6)))  # rank 1: the repeat alone
    assert "val/loss" not in trainer.callback_metrics
    # the other process's state has a column per component and one for batches: so has this
    assert model.loss_metrics["val:loss:0"].totals.shape == (2, 2)


class LogsCombinedValLoss(Classifier):
    def on_validation_epoch_end(self):
        self.log("val/loss", 7.0)  # one value over both loaders, before super()
        super().on_validation_epoch_end()


def test_a_combined_user_key_leaves_each_loader_s_values_to_lossplug():
    model, trainer = LogsCombinedValLoss(), quiet_trainer()
    trainer.validate(model, [loader(VAL, 16), loader(TRAIN, 16)])
    metrics = trainer.callback_metrics
    assert metrics["val/loss"].item() == 7.0
    expected = cross_entropy_over(model, TRAIN)
    assert metrics["val/loss/dataloader_idx_1"].item() == pytest.approx(expected, rel=1e-6)


class LogsValLossLater(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.log("val/loss", 5.0)  # another hook than lossplug's


def test_a_callback_may_log_lossplug_s_key_from_another_hook():
    trainer = quiet_trainer(callbacks=[LogsValLossLater()])
    trainer.fit(Classifier(), loader(TRAIN, 16), loader(VAL, 16))
    assert trainer.callback_metrics["val/loss"].item() == 5.0


class WithAuxiliary(Classifier):
    """The mixin's criterion plus a registered composite with a step schedule and DWA."""

    def __init__(self) -> None:
        super().__init__(lr=0.1)
        ramp = {"schedule": "linear", "initial": 0.0, "final": 1.0, "end": 4, "unit": "step"}
        self.aux = self.register_criterion(
            "aux",
            lossplug.CompositeLoss(
                {"ce": "cross_entropy", "focal": "focal"}, weights={"ce": ramp}, weighting="dwa"
            ),
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        scores = self(x)
        return self.compute_loss(scores, y) + self.compute_loss(scores, y, name="aux")


def test_a_registered_criterion_follows_its_schedule_and_adapts_each_epoch():
    model = WithAuxiliary()
    trainer = quiet_trainer(max_epochs=3)
    trainer.fit(model, loader(TRAIN, 16))  # 5 steps an epoch
    assert trainer.global_step == 15
    assert model.aux.term_weights.tolist() == [1.0, 1.0]  # the ramp ended at step 4
    assert model.aux.learned.epochs_seen.item() == 3  # DWA saw every training epoch
    assert not torch.equal(model.aux.learned.lambdas, torch.ones(2))  # from the third epoch on
