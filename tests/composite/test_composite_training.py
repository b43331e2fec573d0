"""CompositeLoss in training: resumed schedules, learned weights, DDP, the Hydra configs."""

from __future__ import annotations

import itertools
import json
import math
from functools import partial

import lightning as L
import pytest
import torch
from conftest import JOBS, TRAIN, dwa_by_hand, run_python
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import CompositeLoss, LossPlugMixin
from lossplug.losses import L1Loss, MSELoss
from lossplug.weighting import FAMOWeighting

DDP_JOB = JOBS / "ddp_weighting_job.py"


pytestmark = pytest.mark.usefixtures("one_thread")


# -- resume ---------------------------------------------------------------------------------

RAMPED = {
    "mse": {"schedule": "linear", "initial": 0.0, "final": 1.0, "end": 4, "unit": "epoch"},
    "l1": {"schedule": "cosine", "initial": 1.0, "final": 0.2, "end": 12, "unit": "step"},
}


class Regressor(LossPlugMixin, L.LightningModule):
    def __init__(self) -> None:
        loss = CompositeLoss({"mse": MSELoss(), "l1": L1Loss()}, weights=RAMPED, weighting="dwa")
        super().__init__(loss=loss, optimizer=partial(torch.optim.SGD, lr=0.05))
        self.net = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(16, 3, generator=generator)
        return DataLoader(TensorDataset(x, x.sum(dim=1)), batch_size=4)  # 4 steps per epoch

    def val_dataloader(self) -> DataLoader:
        return self.train_dataloader()


class WeightRecorder(Callback):
    """The weights each training step used: (epoch, step, [mse, l1] scheduled, DWA factors)."""

    def __init__(self) -> None:
        self.used: list[tuple[int, int, list[float]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        criterion = pl_module.criterion
        weights = criterion.term_weights.tolist(), criterion.learned.lambdas.tolist()
        self.used.append((trainer.current_epoch, trainer.global_step - 1, *weights))


def fit(max_epochs: int, root, ckpt_path=None, checkpoint=None):
    torch.manual_seed(0)
    model, recorder = Regressor(), WeightRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpoint is not None,
        callbacks=[recorder, *([checkpoint] if checkpoint else [])],
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    trainer.fit(model, ckpt_path=ckpt_path)
    return model, recorder.used


def expected_weights(epoch: int, step: int) -> list[float]:
    mse = min(epoch / 4, 1.0)
    l1 = 0.2 + 0.8 * (1 + math.cos(math.pi * min(step / 12, 1.0))) / 2
    return [mse, l1]


def test_scheduled_and_dwa_weights_continue_where_they_were_after_a_resume(tmp_path):
    whole, whole_used = fit(4, tmp_path / "whole")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit(2, tmp_path / "first", checkpoint=checkpoint)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
    # the weights of the last validation: epoch 1, after 8 steps
    assert saved["criterion.term_weights"].tolist() == pytest.approx(expected_weights(1, 8))
    assert saved["criterion.learned.epochs_seen"] == 2  # DWA's history of both epochs
    resumed, resumed_used = fit(4, tmp_path / "resumed", ckpt_path=tmp_path / "ckpt" / "last.ckpt")

    for epoch, step, scheduled, _ in whole_used:
        assert scheduled == pytest.approx(expected_weights(epoch, step), abs=1e-6)
    assert resumed_used[0][2][0] == pytest.approx(0.5)  # epoch 2 of the ramp, not its start
    assert resumed_used[-1][3] != pytest.approx([1.0, 1.0], abs=1e-4)  # DWA at work
    assert len(resumed_used) == len(whole_used) - 8
    for got, want in zip(resumed_used, whole_used[8:], strict=True):
        assert got[:2] == want[:2]  # epoch and step
        assert got[2] == pytest.approx(want[2], abs=1e-7)  # scheduled
        assert got[3] == pytest.approx(want[3], abs=1e-7)  # DWA
    for name, parameter in whole.named_parameters():  # the same weights gave the same updates
        torch.testing.assert_close(resumed.state_dict()[name], parameter.detach())


# -- uncertainty ----------------------------------------------------------------------------


def test_uncertainty_weights_move_as_the_formula_predicts():
    """Targets x100 and x1 of one noisy signal: the optimum s_i = log L_i is 9.2 and 0.

    ds_i = 1/2 - 1/2 exp(-s_i) L_i: below log L_i the log-variance rises. Adam reaches the
    small term's optimum at once; the large one's gradient shrinks exponentially as s grows,
    so within 400 steps its s climbs steadily but stays below log L.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=generator)
    signal = x @ torch.tensor([1.0, -2.0, 0.5]) + torch.randn(256, generator=generator)
    target = (100 * signal, signal)
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    scale = torch.tensor([100.0, 1.0])  # the model's output layer knows the scales
    loss = CompositeLoss(
        {"big": MSELoss(), "small": MSELoss()},
        inputs={"big": {"pred": 0, "target": 0}, "small": {"pred": 1, "target": 1}},
        weighting="uncertainty",
    )
    optimizer = torch.optim.Adam([*net.parameters(), *loss.parameters()], lr=0.05)
    trajectory = []
    for step in range(400):
        out = net(x) * scale
        optimizer.zero_grad()
        components = loss.components((out[:, 0], out[:, 1]), target)
        loss.total(components).backward()
        optimizer.step()
        if step % 50 == 49:
            trajectory.append(loss.learned.log_variances.detach().clone())

    s = trajectory[-1]
    log_losses = torch.stack([components["big"], components["small"]]).detach().log()
    assert log_losses[0] - log_losses[1] == pytest.approx(math.log(1e4), abs=0.05)  # the noise
    assert s[1].item() == pytest.approx(log_losses[1].item(), abs=0.01)  # at its optimum
    big = [point[0].item() for point in trajectory]
    assert all(b > a for a, b in itertools.pairwise(big))  # rising all along ...
    assert 2.5 < big[-1] < log_losses[0].item()  # ... towards log L_big from below
    weights = loss.varying_weights()  # 1/2 exp(-s_i)
    assert weights["big"].item() == pytest.approx(0.5 * math.exp(-s[0].item()))
    assert weights["big"] < weights["small"] / 10  # the large term's weight fell


# -- DWA under DDP --------------------------------------------------------------------------


@pytest.mark.parametrize("sharding", ["sampler", "own"])  # Lightning's sampler; own shards
def test_dwa_weights_are_identical_on_both_ddp_ranks(tmp_path, sharding):
    result = run_python(DDP_JOB, tmp_path, sharding, cwd=tmp_path, timeout=240)  # a hang fails
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    for epoch0, epoch1 in zip(*ranks, strict=True):
        assert epoch0["weights"] == epoch1["weights"]  # bit for bit
        assert epoch0["synced_means"] == epoch1["synced_means"]
        assert epoch0["local_means"] != pytest.approx(epoch1["local_means"], rel=0.1)
        # the synced means are the sample-weighted means of both ranks' batches
        counts = epoch0["local_count"], epoch1["local_count"]
        # the sampler's repeat on rank 1 counts for nothing
        assert counts == ((56, 55) if sharding == "sampler" else (64, 48))
        weighted = [
            (counts[0] * a + counts[1] * b) / sum(counts)
            for a, b in zip(epoch0["local_means"], epoch1["local_means"], strict=True)
        ]
        assert epoch0["synced_means"] == pytest.approx(weighted, rel=1e-5)
    records = ranks[0]  # records[t]: after epoch t, the weights for epoch t + 1
    assert records[0]["weights"] == [1.0, 1.0]  # epochs 0 and 1
    for t in (1, 2, 3):
        synced = [records[t]["synced_means"], records[t - 1]["synced_means"]]
        assert records[t]["weights"] == pytest.approx(dwa_by_hand(*synced, 2.0), rel=1e-5)
        assert records[t]["weights"] != pytest.approx([1.0, 1.0], abs=1e-4)
        local = [dwa_by_hand(r[t]["local_means"], r[t - 1]["local_means"], 2.0) for r in ranks]
        assert local[0] != pytest.approx(local[1], abs=1e-4)  # un-synced means would diverge


# -- the Hydra configs through scripts/train.py ---------------------------------------------

SMALL = ("data.num_samples=64", "test=false", "trainer.enable_progress_bar=false")


@pytest.mark.parametrize(
    ("loss", "terms", "varying"),
    [
        ("focal_dice", {"focal", "dice"}, set()),
        ("dice_ce_ramp", {"dice", "ce"}, {"dice"}),
        ("dice_ce_uncertainty", {"dice", "ce"}, {"dice", "ce"}),
        ("dice_ce_dwa", {"dice", "ce"}, {"dice", "ce"}),
        ("dice_ce_famo", {"dice", "ce"}, {"dice", "ce"}),
    ],
)
def test_each_composite_config_trains(loss, terms, varying, tmp_path):
    result = run_python(
        TRAIN,
        "experiment=segmentation",
        f"loss={loss}",
        "++trainer.fast_dev_run=true",
        *SMALL,
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {f"val/loss/{name}" for name in terms} <= set(metrics)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    logged = {key.rsplit("/", 1)[1] for key in metrics if key.startswith("train/loss_weight/")}
    assert logged == varying


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("loss=dice_ce_ramp", "loss.weights.dice.begin=6"),
            "composite: option 'weights.dice': the linear schedule must end after it starts, "
            "got begin=6 and end=5 (epochs)",
        ),
        (
            ("loss=dice_ce_terms", "+loss.inputs.dice.pred=aux"),
            "composite: term 'dice' reads pred['aux'] (option 'inputs.dice.pred'), but it is "
            "a single Tensor, not a dict, tuple or list",
        ),
    ],
)
def test_bad_composite_configs_stop_train_py_before_any_step(overrides, message, tmp_path):
    result = run_python(
        TRAIN,
        "experiment=segmentation",
        *overrides,
        "++trainer.fast_dev_run=true",
        *SMALL,
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=240,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("loss=dice_ce_terms", "loss.weights.dice=-1"),
            "composite: option 'weights.dice' must be a finite number >= 0.0, got -1",
        ),
        (
            ("loss=dice_ce_ramp", "+loss.weights.dice.lenght=5"),
            "composite: option 'weights.dice': unknown option 'lenght' for a linear schedule; "
            "valid options: begin, end, final, initial, schedule, unit",
        ),
        (
            ("loss=dice_ce_terms", "loss.weighting=dwa", "loss.temperature=-1"),
            "dwa: option 'temperature' must be a finite number > 0.0, got -1",
        ),
        (
            ("loss=dice_ce_uncertainty", "loss.weights.ce=0"),
            "composite: option 'weights.ce' must be a constant > 0 with weighting='uncertainty'",
        ),
        (
            ("loss=dice_ce_terms", "+loss.inputs.dice.activation=softmax"),
            "option 'inputs.dice.activation' is 'softmax', which gives probs, but term 'dice' "
            "expects logits",
        ),
        (("loss=dice_ce_terms", "loss.terms.dice._target_=lossplug.losses.DyceLoss"), "DyceLoss"),
        (
            ("loss=dice_ce_famo", "loss.weighting_options.lr=-1"),
            "famo: option 'lr' must be a finite number > 0.0, got -1",
        ),
        (
            ("loss=dice_ce_dwa", "loss.weighting=famo"),
            "composite: option 'temperature' applies to weighting='dwa' only, got weighting='famo'",
        ),
        (
            ("loss=dice_ce_famo", "+loss.weighting_options.temperature=2"),
            "composite: option 'weighting_options' names ['temperature'], which "
            "weighting='famo' does not take; its options: ['lr', 'weight_decay']",
        ),
    ],
)
def test_bad_composite_configs_fail_when_built(compose_train, overrides, message):
    from hydra.errors import InstantiationException

    from lossplug.demo.training import build

    cfg = compose_train("experiment=segmentation", *overrides)
    with pytest.raises(Exception) as info:
        build(cfg)
    error = info.value
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    assert message in str(error)


def test_weights_weighting_and_routes_from_the_command_line(compose_train):
    from lossplug.demo.training import build

    cfg = compose_train(
        "experiment=segmentation",
        "loss=dice_ce_terms",
        "loss.weights.dice={schedule:step,initial:0.1,milestones:[2],values:[1.0]}",
        "loss.weighting=dwa",
        "loss.temperature=0.5",
        "loss.terms.dice.input=probs",
        "+loss.inputs.dice.activation=softmax",
    )
    criterion = build(cfg).model.criterion
    assert criterion.weighting == "dwa" and criterion.learned.temperature == 0.5
    assert criterion.routes["dice"].activation == "softmax"
    assert criterion.input_space == "logits"
    criterion.set_progress(epoch=2, step=0)
    assert criterion.term_weights.tolist() == pytest.approx([1.0, 1.0])
    criterion.set_progress(epoch=1, step=0)
    assert criterion.term_weights.tolist() == pytest.approx([0.1, 1.0])


@pytest.mark.parametrize(
    ("overrides", "lr", "decay"),
    [
        (("loss=dice_ce_famo", "loss.weighting_options.weight_decay=0.001"), 0.025, 0.001),
        (
            ("loss=dice_ce_terms", "loss.weighting=famo", "+loss.weighting_options.lr=0.05"),
            0.05,
            0.01,
        ),
    ],
)
def test_famo_and_its_options_from_the_command_line(compose_train, overrides, lr, decay):
    from lossplug.demo.training import build

    criterion = build(compose_train("experiment=segmentation", *overrides)).model.criterion
    assert criterion.weighting == "famo" and isinstance(criterion.learned, FAMOWeighting)
    assert (criterion.learned.lr, criterion.learned.weight_decay) == (lr, decay)
