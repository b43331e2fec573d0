"""``loss.gather=true`` in a real 2-process run of scripts/train.py (``trainer=ddp_sim``).

Supervised contrastive learning on the digits: each process embeds its half of every batch,
and the loss pairs every sample with every other sample of the global batch. Lightning's
``DistributedSampler`` hands rank 0 the even and rank 1 the odd samples of each 2 x 64 block
of the validation split (and rank 1 a repeat of sample 0 at the end, the split being odd), so
the logged ``val/loss`` must be the single-process SupCon over the consecutive blocks of 128
real samples, weighted by their anchors: recomputed here from the final checkpoint.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TRAIN, run_python
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lossplug.demo.models import Embedder
from lossplug.functional import supcon
from lossplug.functional.metric_learning import supcon_anchor_count

pytestmark = pytest.mark.slow
BATCH = 64  # per process


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gather_run")
    overrides = [
        "experiment=metric_learning",
        "loss=supcon",
        "loss.gather=true",
        "trainer=ddp_sim",
        "trainer.max_epochs=2",
        f"data.batch_size={BATCH}",
        "test=false",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={folder}",
    ]
    result = run_python(TRAIN, *overrides, cwd=folder, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return folder


def test_the_logged_loss_is_the_single_process_loss_of_the_global_batches(run_dir):
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    x, y = datamodule.splits["val"].tensors
    assert len(y) % 2  # odd: the sampler repeats a sample, which the gathered batch leaves out
    model = Embedder.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").eval()
    with torch.no_grad():
        embeddings = model(x).double()
    losses, anchors = [], []
    for start in range(0, len(y), 2 * BATCH):
        block = slice(start, start + 2 * BATCH)
        losses.append(supcon(embeddings[block], y[block], temperature=cfg.loss.temperature))
        anchors.append(supcon_anchor_count(y[block]))
    expected = (torch.stack(losses) * torch.stack(anchors)).sum() / torch.stack(anchors).sum()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/loss"] == pytest.approx(expected.item(), rel=1e-5, abs=0)
    assert metrics["val/knn_acc"] > 0.9
