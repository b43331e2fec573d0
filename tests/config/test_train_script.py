"""scripts/train.py as users run it: a real process, real data, TensorBoard output."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import TRAIN, run_python
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.metrics import mean_pinball_loss, r2_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lossplug.demo.models import Regressor


def scalars(run_dir):
    """{tag: [values]} from the TensorBoard run in ``run_dir``."""
    accumulator = EventAccumulator(str(run_dir / "tensorboard" / "version_0"))
    accumulator.Reload()
    return {
        tag: [event.value for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


@pytest.mark.slow
def test_default_run_learns_digits_to_95_percent(tmp_path):
    result = run_python(TRAIN, f"hydra.run.dir={tmp_path}", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val/acc"] >= 0.95
    assert metrics["test/acc"] >= 0.93
    assert f"TensorBoard run: {tmp_path}/tensorboard/version_0" in result.stdout
    assert "val/acc" in result.stdout  # the final metrics are printed
    assert "train_step/loss=" in result.stdout + result.stderr  # the progress bar shows the loss
    logged = scalars(tmp_path)
    assert {"train_step/loss", "train/loss", "train/loss/cross_entropy", "val/loss"} <= set(logged)
    assert "val/acc" in logged
    assert logged["val/loss"][-1] < logged["val/loss"][0] / 5
    config = yaml.safe_load((tmp_path / ".hydra" / "config.yaml").read_text())
    assert config["loss"]["_target_"] == "lossplug.losses.CrossEntropyLoss"
    assert config["optimizer"]["_target_"] == "torch.optim.AdamW"
    resolved = yaml.safe_load((tmp_path / "config_resolved.yaml").read_text())
    assert resolved["trainer"]["default_root_dir"] == str(tmp_path)  # was ${hydra:...}
    assert resolved["logger"]["save_dir"] == str(tmp_path)


def test_sweep_runs_each_choice_with_the_overrides(tmp_path):
    result = run_python(
        TRAIN,
        "-m",
        "loss=cross_entropy,focal",
        "optimizer.lr=0.005",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
        "test=false",
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, loss in (("0", "CrossEntropyLoss"), ("1", "FocalLoss")):
        run_dir = tmp_path / job
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert config["loss"]["_target_"] == f"lossplug.losses.{loss}"
        assert config["optimizer"]["lr"] == 0.005
        logged = scalars(run_dir)
        # the optimizer really used the overridden learning rate (LearningRateMonitor)
        lr_tags = [tag for tag in logged if tag.startswith("lr-AdamW")]
        # named by parameter group: weights, and biases and norms without decay
        assert sorted(lr_tags) == ["lr-AdamW/default", "lr-AdamW/default/no_decay"]
        assert all(value == pytest.approx(0.005) for tag in lr_tags for value in logged[tag])
        assert len(logged["val/loss"]) == 2
        assert json.loads((run_dir / "metrics.json").read_text())["val/loss"] > 0
    assert "focal" in yaml.safe_load((tmp_path / "1" / ".hydra" / "overrides.yaml").read_text())[0]


def test_a_quantile_regression_predicts_and_logs_each_level(tmp_path):
    result = run_python(
        TRAIN,
        "experiment=regression",
        "loss=quantile",
        "loss.quantiles=[0.1,0.5,0.9]",
        "trainer.max_epochs=4",
        "trainer.enable_progress_bar=false",
        "test=false",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    model = Regressor.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt").eval()
    assert model.head.out_features == 3 and model.point_column == 1  # r2 scores q50
    data = instantiate(OmegaConf.load(tmp_path / "config_resolved.yaml").data)
    data.setup()
    inputs, target = data.splits["val"].tensors
    with torch.no_grad():
        pred = model(inputs)
    assert pred.shape == (len(target), 3)
    # the last epoch's logged means are scikit-learn's over the whole validation split
    for k, (level, name) in enumerate(((0.1, "q10"), (0.5, "q50"), (0.9, "q90"))):
        expected = mean_pinball_loss(target.numpy(), pred[:, k].numpy(), alpha=level)
        assert metrics[f"val/loss/{name}"] == pytest.approx(expected, rel=1e-4)
    expected = sum(metrics[f"val/loss/{name}"] for name in ("q10", "q50", "q90")) / 3
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["val/r2"] == pytest.approx(r2_score(target.numpy(), pred[:, 1].numpy()), 1e-4)
    assert metrics["val/r2"] > 0.2  # it learned
    # the columns order the targets as their levels say: fewer below q10 than q50 than q90
    below = (target.unsqueeze(1) < pred).float().mean(0).tolist()
    assert below[0] < below[1] < below[2]
    assert {"train/loss/q10", "train/loss/q50", "train/loss/q90"} <= set(scalars(tmp_path))


def test_a_typo_on_the_command_line_names_the_valid_options(tmp_path):
    result = run_python(TRAIN, "loss=focal", "optimizer.lrr=0.1", cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert "optimizer: unknown option 'lrr' for torch.optim.AdamW. Did you mean 'lr'?" in (
        result.stderr
    )
    assert "Valid options:" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ("seed=1", "test=false"),  # Lightning first imported once Hydra set up logging
        ("trainer.max_epochs=2", "test=false"),  # imported before, to check the override
    ],
    ids=["plain keys", "a trainer override"],
)
def test_the_console_shows_each_line_once_and_the_log_file_keeps_them(tmp_path, overrides):
    result = run_python(TRAIN, *overrides, f"hydra.run.dir={tmp_path}", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    for line in ("GPU available: False, used: False", "Total params", "Final metrics"):
        assert console.count(line) == 1, line
    assert "Tip:" not in console and "deprecated" not in console
    assert "INFO" not in console  # messages as they are, not in the log file's format
    log = (tmp_path / "train.log").read_text()
    assert "[lightning.pytorch.utilities.rank_zero][INFO] - GPU available: False" in log
    assert "Tip:" not in log
