"""FAMO in real Trainer runs: its logged weights, a resumed run, gradient accumulation, DDP."""

from __future__ import annotations

import json
from functools import partial

import lightning as L
import pytest
import torch
from conftest import JOBS, famo_by_hand, run_python
from exact_modules import TwoColumns
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import CompositeLoss, LossPlugMixin
from lossplug.losses import L1Loss, MSELoss

DDP_JOB = JOBS / "ddp_famo_job.py"
LR = 0.1  # FAMO's learning rate here: the logits move visibly within a few steps
DECAY = 0.01


pytestmark = pytest.mark.usefixtures("one_thread")


class TwoHeads(TwoColumns, LossPlugMixin, L.LightningModule):
    """A linear model with two heads: an MSE term and an L1 term on targets of other scales."""

    def __init__(self) -> None:
        loss = CompositeLoss(
            {"mse": MSELoss(), "l1": L1Loss()},
            inputs={"mse": {"pred": 0, "target": 0}, "l1": {"pred": 1, "target": 1}},
            weighting="famo",
            weighting_options={"lr": LR, "weight_decay": DECAY},
        )
        super().__init__(loss=loss, optimizer=partial(torch.optim.SGD, lr=0.05))
        self.net = nn.Linear(4, 2)
        self.forwards = 0
        #: each training batch's term values, in the criterion's order
        self.batch_values: list[list[float]] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.forwards += 1
        return super().forward(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.batch_values.append([value.item() for value in self.step_components.values()])
        return loss

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=generator)
        y = x @ torch.randn(4, 2, generator=generator) + 0.1 * torch.randn(
            32, 2, generator=generator
        )
        y[:, 1] *= 20.0  # the L1 term starts far larger and falls at its own pace
        return DataLoader(TensorDataset(x, y), batch_size=4)  # 8 batches per epoch


class FamoRecorder(Callback):
    """After each training batch: the optimizer steps taken, the logits and the logged weights."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, list[float], dict[str, float]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        criterion = pl_module.criterion
        weights = {name: w.item() for name, w in criterion.varying_weights().items()}
        self.seen.append((trainer.global_step, criterion.learned.logits.tolist(), weights))


def fit(root, max_epochs: int, ckpt_path=None, **options) -> tuple[TwoHeads, FamoRecorder]:
    torch.manual_seed(0)
    model, recorder = TwoHeads(), FamoRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        default_root_dir=root,
        callbacks=[recorder, *options.pop("callbacks", [])],
        **{"logger": False, "enable_model_summary": False, **options},
    )
    trainer.fit(model, ckpt_path=ckpt_path)
    return model, recorder


def test_logged_weights_and_logits_follow_the_formula_with_no_extra_forward_pass(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb")
    model, recorder = fit(tmp_path, 2, logger=logger, log_every_n_steps=1)
    assert model.forwards == 16 == len(model.batch_values)  # one forward per batch, no more
    expected = famo_by_hand(model.batch_values, lr=LR, weight_decay=DECAY)
    for (_, logits, weights), (want_logits, want_factors) in zip(
        recorder.seen, expected, strict=True
    ):
        assert logits == pytest.approx(want_logits, rel=1e-5, abs=2e-6)
        assert [weights["mse"], weights["l1"]] == pytest.approx(want_factors, rel=1e-5)
    assert expected[-1][0][1] - expected[-1][0][0] > 0.2  # the logits moved apart

    events = EventAccumulator(logger.log_dir, size_guidance={SCALARS: 0})
    events.Reload()
    for name in ("mse", "l1"):
        logged = [(e.step, e.value) for e in events.Scalars(f"train/loss_weight/{name}")]
        # step s's weights (those its batch used) are logged at step s
        assert [step for step, _ in logged] == list(range(16))
        values = [value for _, value in logged]
        assert values == pytest.approx([seen[2][name] for seen in recorder.seen], rel=1e-6)
    assert values[-1] != pytest.approx(values[0], rel=0.05)  # the weights changed


def test_a_resumed_run_continues_with_identical_logits(tmp_path):
    whole, whole_recorder = fit(tmp_path / "whole", 4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first, _ = fit(tmp_path / "first", 2, callbacks=[checkpoint])
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
    for name in ("logits", "exp_avg", "exp_avg_sq", "adam_steps", "log_losses", "lambdas"):
        key = f"criterion.learned.{name}"
        assert torch.equal(saved[key], first.state_dict()[key]), name
    assert saved["criterion.learned.adam_steps"] == 15
    resumed, resumed_recorder = fit(
        tmp_path / "resumed", 4, ckpt_path=tmp_path / "ckpt" / "last.ckpt"
    )
    whole_seen, resumed_seen = whole_recorder.seen, resumed_recorder.seen
    assert len(resumed_seen) == len(whole_seen) - 16 == 16
    for got, want in zip(resumed_seen, whole_seen[16:], strict=True):
        assert got[0] == want[0]  # the step
        assert got[1] == pytest.approx(want[1], abs=1e-7)  # the logits
        assert got[2] == pytest.approx(want[2], rel=1e-6)  # the weights
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


def test_with_gradient_accumulation_the_logits_move_once_per_optimizer_step(tmp_path):
    model, recorder = fit(tmp_path, 1, accumulate_grad_batches=2)
    logits = [seen[1] for seen in recorder.seen]
    moved = [k for k in range(1, 8) if logits[k] != logits[k - 1]]
    assert moved == [2, 4, 6]  # the first micro-batch of steps 1, 2 and 3
    first_micro_batches = model.batch_values[::2]
    expected = famo_by_hand(first_micro_batches, lr=LR, weight_decay=DECAY)
    for k, (want_logits, want_factors) in enumerate(expected):
        for batch in (2 * k, 2 * k + 1):  # both micro-batches of step k use its factors
            assert logits[batch] == pytest.approx(want_logits, rel=1e-5, abs=2e-6)
            weights = recorder.seen[batch][2]
            assert [weights["mse"], weights["l1"]] == pytest.approx(want_factors, rel=1e-5)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_logits_are_identical_on_both_ddp_ranks_and_follow_the_synced_values(tmp_path, accumulate):
    result = run_python(DDP_JOB, tmp_path, accumulate, LR, DECAY, cwd=tmp_path, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 16  # batches, 2 epochs
    for batch0, batch1 in zip(*ranks, strict=True):
        assert batch0["logits"] == batch1["logits"]  # bit for bit
        assert batch0["factors"] == batch1["factors"]
        assert batch0["values"] != pytest.approx(batch1["values"], rel=0.1)  # local values
        first = batch0["batch_idx"] % accumulate == 0
        assert batch0["all_reduces"] == batch1["all_reduces"] == int(first)

    starts = [k for k, batch in enumerate(ranks[0]) if batch["batch_idx"] % accumulate == 0]
    synced = [
        [(a + b) / 2 for a, b in zip(ranks[0][k]["values"], ranks[1][k]["values"], strict=True)]
        for k in starts
    ]
    expected = famo_by_hand(synced, lr=LR, weight_decay=DECAY)
    for step, k in enumerate(starts):
        for batch in ranks[0][k : k + accumulate]:
            assert batch["logits"] == pytest.approx(expected[step][0], rel=1e-5, abs=2e-6)
            assert batch["factors"] == pytest.approx(expected[step][1], rel=1e-5)
    assert abs(expected[-1][0][0] - expected[-1][0][1]) > 0.05  # the logits moved
    for rank in ranks:  # either rank's own values would give other logits
        local = famo_by_hand([rank[k]["values"] for k in starts], lr=LR, weight_decay=DECAY)
        assert local[-1][0] != pytest.approx(expected[-1][0], rel=1e-3)
