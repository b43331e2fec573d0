"""trainer=ddp_sim: two real processes on CPU, talking over gloo, through scripts/train.py.

Lightning's defaults stay on (its DistributedSampler, which pads the 359 validation digits
to 360 with a repeat, the progress bar, checkpoints), and the logged values are compared with
the loss recomputed over the real splits in one process, from the saved checkpoint.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, run_python
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lossplug.demo.models import Classifier


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp_sim")
    result = run_python(
        REPO / "scripts" / "train.py",
        "trainer=ddp_sim",
        "trainer.max_epochs=2",
        f"hydra.run.dir={run_dir}",
        cwd=run_dir,
        timeout=300,  # a hang (e.g. ranks running collectives in different orders) fails
    )
    return run_dir, result


def test_ddp_sim_trains_with_two_processes(ddp_run):
    run_dir, result = ddp_run
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Processes: 2" in result.stdout
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/acc"] > 0.8  # two epochs, each process on half the data
    assert metrics["test/loss/cross_entropy"] == metrics["test/loss"]


@pytest.mark.parametrize("split", ["val", "test"])
def test_ddp_sim_logs_the_single_process_loss_over_the_real_split(ddp_run, split):
    run_dir, result = ddp_run
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    x, y = datamodule.splits[split].tensors
    assert len(y) % 2  # an odd size: the sampler repeats a sample
    model = Classifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(x).double(), y).item()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics[f"{split}/loss"] == pytest.approx(expected, rel=1e-5, abs=0)
