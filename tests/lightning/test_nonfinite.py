"""on_nonfinite: a NaN or inf loss injected at known batches, under raise, skip and warn."""

from __future__ import annotations

import copy
import json
import math
import re

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import DEMO_CONF, JOBS, quiet_trainer, run_python
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import CompositeLoss
from lossplug.config import check_command_line
from lossplug.demo.training import build
from lossplug.losses import MSELoss
from lossplug.mixin import CHECKPOINT_KEY, LossPlugMixin
from lossplug.nonfinite import (
    MAX_PENDING,
    NonFiniteGuard,
    NonFiniteLossError,
    NonFiniteLossWarning,
    drop_unless,
)
from lossplug.registry import CallableLoss

BATCH = 4
BATCHES = 6
#: SGD with momentum and weight decay: any optimizer call moves the parameters.
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05, "momentum": 0.9}
SGD_DECAY = {**SGD, "weight_decay": 0.1}


def log_error(pred, target):
    """Squared error of logarithms: -inf inside, inf out, for a target of 0."""
    return (torch.log1p(pred.abs()) - torch.log(target)).pow(2).mean()


def two_terms():
    return CompositeLoss({"mse": MSELoss(), "log_error": CallableLoss(log_error)})


class Lit(LossPlugMixin, pl.LightningModule):
    def __init__(self, on_nonfinite="raise", optimizer=SGD_DECAY, loss=None):
        super().__init__(loss=loss or two_terms(), optimizer=optimizer, on_nonfinite=on_nonfinite)
        self.net = nn.Linear(3, 1)

    def forward(self, x):
        return self.net(x).squeeze(-1)


def data(bad=(), value=0.0, batches=BATCHES):
    """``batches`` batches of positive targets; in each batch of ``bad``, one target is ``value``.

    A target of 0 makes ``log_error`` infinite (``mse`` stays finite); NaN makes both NaN.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batches * BATCH, 3, generator=generator)
    y = (x @ torch.tensor([1.0, -2.0, 0.5])).abs() + 1
    for batch in bad:
        y[batch * BATCH] = value
    return DataLoader(TensorDataset(x, y), batch_size=BATCH)


def trainer(**options):
    # logging every 50 steps, longer than an epoch: checks run at the epoch's end
    return quiet_trainer(**{"log_every_n_steps": 50, **options})


class Snapshots(Callback):
    """Parameters and optimizer state before and after every training batch."""

    def __init__(self):
        self.before, self.after = {}, {}

    @staticmethod
    def state(trainer, module):
        params = [p.detach().clone() for p in module.parameters()]
        return params, copy.deepcopy(trainer.optimizers[0].state_dict())

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before[batch_idx] = self.state(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.after[batch_idx] = self.state(trainer, module)


def messages(warned):
    """The non-finite warnings' messages among everything ``pytest.warns`` recorded."""
    return [str(w.message) for w in warned if issubclass(w.category, NonFiniteLossWarning)]


def assert_same_state(first, second):
    (params_a, optim_a), (params_b, optim_b) = first, second
    for a, b in zip(params_a, params_b, strict=True):
        assert torch.equal(a, b)
    assert optim_a["state"].keys() == optim_b["state"].keys()
    for key, state in optim_a["state"].items():
        for name, value in state.items():
            assert torch.equal(value, optim_b["state"][key][name])


# -- raise ----------------------------------------------------------------------------------


def test_raise_names_the_component_stage_epoch_and_batch():
    with pytest.raises(NonFiniteLossError) as error:
        trainer(limit_val_batches=0).fit(Lit(), data(bad=[3]))
    message = str(error.value)
    assert "training loss at epoch 0, batch 3: total is inf, 'log_error' is inf" in message
    assert "'mse'" not in message  # finite: not named
    assert "on_nonfinite=skip" in message  # the way out


def test_raise_names_a_validation_batch_and_a_nan():
    nan = float("nan")
    with pytest.raises(
        NonFiniteLossError, match="validation loss at epoch 0, batch 1: total is nan"
    ):
        trainer().fit(Lit(), data(), data(bad=[1], value=nan, batches=3))


def test_raise_stops_before_a_checkpoint_holds_the_poisoned_weights(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
    run = trainer(limit_val_batches=0, enable_checkpointing=True, callbacks=[checkpoints])
    with pytest.raises(NonFiniteLossError, match="batch 2"):
        run.fit(Lit(), data(bad=[2]))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2  # batches 0 and 1; batch 2's step never reached a file
    assert all(torch.isfinite(value).all() for value in saved["state_dict"].values())


# -- skip -----------------------------------------------------------------------------------


def test_skip_leaves_parameters_and_optimizer_state_exactly_as_before_and_finishes():
    snapshots = Snapshots()
    model = Lit("skip")
    run = trainer(max_epochs=2, limit_val_batches=0, callbacks=[snapshots])
    with pytest.warns(NonFiniteLossWarning) as warned:
        run.fit(model, data(bad=[1, 4]))
    places = [re.search(r"epoch \d, batch \d: total is inf", m) for m in messages(warned)]
    assert [place.group() for place in places] == [
        f"epoch {epoch}, batch {batch}: total is inf" for epoch in (0, 1) for batch in (1, 4)
    ]
    assert run.state.finished and run.current_epoch == 2
    for batch in (1, 4):  # the last epoch's snapshots: the skipped steps left everything alone
        assert_same_state(snapshots.before[batch], snapshots.after[batch])
    with pytest.raises(AssertionError):  # while a normal step moves the parameters
        assert_same_state(snapshots.before[2], snapshots.after[2])
    assert model.nonfinite.skipped_steps == 4  # 2 bad batches x 2 epochs
    assert run.callback_metrics["train/nonfinite_skipped"] == 4
    assert run.global_step == 2 * BATCHES  # skipped steps still count as steps
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skip_drops_the_whole_accumulated_step():
    snapshots = Snapshots()
    run = trainer(limit_val_batches=0, accumulate_grad_batches=2, callbacks=[snapshots])
    with pytest.warns(NonFiniteLossWarning):
        run.fit(Lit("skip"), data(bad=[2]))
    # batches 2 and 3 form one optimizer step, dropped because batch 2 was not finite
    assert_same_state(snapshots.before[2], snapshots.after[3])
    with pytest.raises(AssertionError):
        assert_same_state(snapshots.before[4], snapshots.after[5])


def test_skip_leaves_bad_batches_out_of_the_epoch_means():
    frozen = {**SGD, "lr": 0.0}  # the weights stay put: the means can be computed here
    model = Lit("skip", optimizer=frozen)
    train, val = data(bad=[0, 3]), data(bad=[1], value=float("nan"), batches=3)
    run = trainer()
    with pytest.warns(NonFiniteLossWarning) as warned:
        run.fit(model, train, val)
    assert ["left 1 validation batch" in m for m in messages(warned)] == [False, False, True]

    def means_over(loader, batches):
        x, y = loader.dataset.tensors
        rows = torch.cat([torch.arange(b * BATCH, (b + 1) * BATCH) for b in batches])
        with torch.no_grad():
            pred = model(x[rows])
        return F.mse_loss(pred, y[rows]), log_error(pred, y[rows])

    train_mse, train_log = means_over(train, [1, 2, 4, 5])
    val_mse, val_log = means_over(val, [0, 2])
    metrics = run.callback_metrics
    torch.testing.assert_close(metrics["train/loss/mse"], train_mse)
    torch.testing.assert_close(metrics["train/loss/log_error"], train_log)
    torch.testing.assert_close(metrics["val/loss/mse"], val_mse)
    torch.testing.assert_close(metrics["val/loss"], val_mse + val_log)
    assert metrics["train/nonfinite_skipped"] == 2
    assert metrics["val/nonfinite_skipped"] == 1


def test_the_skip_counter_is_saved_and_restored(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = trainer(limit_val_batches=0, enable_checkpointing=True, callbacks=[checkpoints])
    with pytest.warns(NonFiniteLossWarning):
        first.fit(Lit("skip"), data(bad=[1, 2]))
    assert torch.load(tmp_path / "last.ckpt")[CHECKPOINT_KEY] == {"skipped_steps": 2}
    assert Lit.load_from_checkpoint(tmp_path / "last.ckpt").nonfinite.skipped_steps == 2

    resumed = Lit("skip")
    second = trainer(max_epochs=2, limit_val_batches=0)
    with pytest.warns(NonFiniteLossWarning, match=r"\(3 step\(s\) dropped so far\)") as warned:
        second.fit(resumed, data(bad=[5]), ckpt_path=tmp_path / "last.ckpt")
    assert len(messages(warned)) == 1
    assert resumed.nonfinite.skipped_steps == 3
    assert second.callback_metrics["train/nonfinite_skipped"] == 3


def test_skip_refuses_manual_optimization():
    class Manual(Lit):
        def __init__(self):
            super().__init__("skip")
            self.automatic_optimization = False

    with pytest.raises(ValueError, match=r"on_nonfinite='skip'.*manual optimization"):
        trainer(limit_val_batches=0).fit(Manual(), data())


# -- warn -----------------------------------------------------------------------------------


def test_warn_goes_on_and_names_the_batch():
    model = Lit("warn")
    run = trainer(limit_val_batches=0, log_every_n_steps=1)
    with pytest.warns(NonFiniteLossWarning) as warned:
        run.fit(model, data(bad=[2]))
    assert run.state.finished and run.global_step == BATCHES
    warnings = messages(warned)
    assert "training loss at epoch 0, batch 2: total is inf, 'log_error' is inf" in warnings[0]
    # the inf step poisoned the weights: every later batch is NaN, one warning per check
    assert [re.search(r"batch (\d): total is nan", m).group(1) for m in warnings[1:]] == [
        "3",
        "4",
        "5",
    ]
    assert not torch.isfinite(run.callback_metrics["train/loss"])  # the means show it


def test_finite_runs_neither_warn_nor_log_a_counter(recwarn):
    run = trainer(limit_val_batches=2)
    run.fit(Lit("warn"), data(), data())
    assert not [w for w in recwarn if issubclass(w.category, NonFiniteLossWarning)]
    assert "train/nonfinite_skipped" not in run.callback_metrics


# -- the guard itself -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["raise", "skip", "warn"])
def test_observing_a_batch_never_reads_a_value_on_the_host(policy):
    """Meta tensors have no values: any host read (``.item()``, ``bool()``) would fail."""
    guard = NonFiniteGuard(policy)
    meta = {"a": torch.empty((), device="meta"), "b": torch.empty((), device="meta")}
    for batch_idx in range(5):
        keep = guard.observe("train", 0, batch_idx, meta["a"], meta)
        guard.observe("val", 0, batch_idx, meta["a"], meta)
    if policy == "skip":
        assert keep.device.type == "meta" and keep.dtype == torch.bool
        values, counts = drop_unless(keep, meta, {"a": 4, "b": torch.tensor(3, device="meta")})
        assert values["a"].device.type == counts["b"].device.type == "meta"
    else:
        assert keep is None


def test_a_check_reads_every_pending_batch_and_names_the_first_bad_one():
    guard = NonFiniteGuard("raise")
    for batch_idx in range(4):
        loss = torch.tensor(float("-inf") if batch_idx >= 2 else 1.0)
        guard.observe("val", 3, batch_idx, loss, {"nll": loss, "reg": torch.tensor(0.5)})
    with pytest.raises(NonFiniteLossError) as error:
        guard.check("val")
    message = str(error.value)
    assert "validation loss at epoch 3, batch 2: total is -inf, 'nll' is -inf" in message
    assert "(and 1 later batch(es))" in message and "'reg'" not in message
    guard.check("val")  # read once: nothing left to report


def test_without_logging_steps_a_check_still_comes_within_max_pending_batches():
    guard = NonFiniteGuard("raise")
    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    guard.observe("train", 0, 0, nan, {"l1": nan})
    for batch_idx in range(1, MAX_PENDING - 1):
        guard.observe("train", 0, batch_idx, one, {"l1": one})
    with pytest.raises(NonFiniteLossError, match="batch 0: total is nan, 'l1' is nan"):
        guard.observe("train", 0, MAX_PENDING - 1, one, {"l1": one})


def test_a_component_of_several_values_shows_its_first_non_finite_one():
    guard = NonFiniteGuard("warn")
    per_class = torch.tensor([0.5, -math.inf, math.nan])
    guard.observe("train", 1, 0, torch.tensor(2.0), {"per_class": per_class, "b": torch.ones(())})
    with pytest.warns(NonFiniteLossWarning, match=r"epoch 1, batch 0: 'per_class' is -inf; on"):
        guard.check("train")


def test_only_the_total_non_finite_suspects_a_weight():
    guard = NonFiniteGuard("raise")
    guard.observe("test", 0, 7, torch.tensor(float("nan")), {"ce": torch.tensor(0.3)})
    with pytest.raises(
        NonFiniteLossError, match="batch 7: total is nan, every component is finite"
    ):
        guard.end_epoch("test")


def test_an_unknown_policy_names_the_option_and_the_choices():
    with pytest.raises(ValueError, match=r"on_nonfinite.*'raise', 'skip', 'warn'.*'explode'"):
        Lit("explode")


# -- configs and the command line -----------------------------------------------------------


def test_the_training_config_hands_the_options_to_the_model(compose_train):
    job = build(compose_train("on_nonfinite=skip", "check_inputs=always"))
    assert job.model.nonfinite.policy == "skip" and job.model.input_checks.mode == "always"
    assert job.model.hparams["on_nonfinite"] == "skip"
    defaults = build(compose_train()).model
    assert defaults.nonfinite.policy == "raise" and defaults.input_checks.mode == "first"


def test_an_option_in_the_model_config_wins_over_the_top_level_one(compose_train):
    job = build(compose_train("on_nonfinite=skip", "+model.on_nonfinite=warn"))
    assert job.model.nonfinite.policy == "warn"


@pytest.mark.parametrize("experiment", ["segmentation", "regression", "metric_learning"])
def test_every_demo_task_takes_the_options(compose_train, experiment):
    job = build(
        compose_train(f"experiment={experiment}", "on_nonfinite=warn", "check_inputs=never")
    )
    assert job.model.nonfinite.policy == "warn" and job.model.input_checks.mode == "never"


def test_the_command_line_pre_check_accepts_the_options_and_build_names_a_bad_one(
    compose_train,
):
    check_command_line(
        ["on_nonfinite=skip", "check_inputs=always", "+model.on_nonfinite=warn"], DEMO_CONF
    )
    with pytest.raises(InstantiationException, match=r"on_nonfinite.*'explode'"):
        build(compose_train("on_nonfinite=explode"))


# -- DDP ------------------------------------------------------------------------------------


def test_a_nan_on_one_process_drops_the_step_on_every_process(tmp_path):
    job = JOBS / "nonfinite_ddp_job.py"
    result = run_python(job, tmp_path, cwd=tmp_path, timeout=240)  # a hang fails, never blocks
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank in ranks:  # only rank 1 saw the NaN (batch 2); both dropped the step
        assert rank["changed"] == {"0": True, "1": True, "2": False, "3": True, "4": True}
        assert rank["skipped_steps"] == 1
    assert ranks[0]["params"] == ranks[1]["params"]  # still in step
    assert all(math.isfinite(value) for param in ranks[0]["params"] for value in param)
    assert ranks[0]["metrics"]["train/nonfinite_skipped"] == 1
    assert ranks[0]["metrics"]["val/nonfinite_skipped"] == 1  # rank 1's, summed over ranks
