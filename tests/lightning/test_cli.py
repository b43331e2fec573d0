"""lossplug under LightningCLI: ``examples/cli.py`` run as a user runs it, in a subprocess."""

from __future__ import annotations

import runpy

import pytest
import torch
import torch.nn.functional as TF
import yaml
from conftest import REPO, run_python
from tiny_runs import last_scalars

from lossplug.losses import FocalLoss

pytestmark = pytest.mark.slow

CLI = REPO / "examples" / "cli.py"


def test_loss_and_optimizer_from_the_command_line_and_an_exact_val_loss(tmp_path):
    result = run_python(
        CLI,
        "fit",
        "--model.loss=FocalLoss",
        "--model.loss.gamma=3",
        "--model.optimizer=AdamW",
        "--model.optimizer.lr=0.01",
        "--trainer.max_epochs=2",
        f"--trainer.default_root_dir={tmp_path}",
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "lightning_logs").iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["loss"] == {
        "class_path": "lossplug.losses.FocalLoss",
        "init_args": {
            "mode": "auto",
            "gamma": 3.0,
            "alpha": None,
            "ignore_index": None,
            "reduction": "mean",
        },
    }
    assert config["model"]["optimizer"]["class_path"] == "torch.optim.AdamW"

    # the logged val/loss against the focal formula over the whole validation set, with the
    # weights of the checkpoint Lightning saved after that validation
    example = runpy.run_path(str(CLI))
    (checkpoint,) = (run / "checkpoints").glob("*.ckpt")
    model = example["LitClassifier"](loss=FocalLoss(gamma=3.0))
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    model.load_state_dict(state)
    features, labels = example["Blobs"]().data.tensors
    with torch.no_grad():
        log_p = TF.log_softmax(model(features).double(), 1).gather(1, labels[:, None])
    expected = (-((1 - log_p.exp()) ** 3) * log_p).mean().item()
    logged = last_scalars(run)
    assert logged["val/loss"] == pytest.approx(expected, rel=1e-5)
    assert logged["val/loss/focal"] == logged["val/loss"]


def test_the_top_level_optimizer_flag_is_explained(tmp_path):
    """LightningCLI's --optimizer replaces the mixin's configure_optimizers: Lightning says so."""
    result = run_python(
        CLI,
        "fit",
        "--model.loss=CrossEntropyLoss",
        "--optimizer=SGD",
        "--optimizer.lr=0.1",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path}",
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "configure_optimizers` will be overridden by `LightningCLI" in result.stderr
