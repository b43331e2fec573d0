"""Two nodes under ``torchrun``, one process each, on this machine: the issue's command.

Each node's ``torchrun`` starts its process on its own (node 1 a moment later, in another
second), yet the job has one output folder and one TensorBoard run, rank 0's, and the logged
``val/loss`` equals the loss recomputed in one process over the real validation split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import HELPERS, REPO, dwa_by_hand, free_port
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lossplug.demo.launch import check_slurm_tasks, follower_overrides
from lossplug.demo.models import Classifier

pytestmark = pytest.mark.slow

TORCHRUN = Path(sys.executable).parent / "torchrun"
COMMAND = (
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.num_nodes=2",
    "trainer.devices=1",
    "trainer.max_epochs=2",
    "test=false",
)
DWA_EPOCHS = 3  # DWA's weights move from the third epoch on
DWA = (
    "experiment=segmentation",
    "loss=dice_ce_dwa",
    "data.num_samples=120",
    "trainer.sync_batchnorm=false",  # PyTorch's SyncBatchNorm runs on GPUs only
    f"trainer.max_epochs={DWA_EPOCHS}",
    "test=false",
    "+callbacks.agree._target_=weights_agree.LossWeightsAgree",  # tests/helpers/weights_agree.py
)


def run_two_nodes(workdir: Path, *overrides: str) -> list[str]:
    """Run ``scripts/train.py`` as two torchrun nodes in ``workdir``; each node's output."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(HELPERS)
    nodes = []
    for node_rank in (0, 1):
        launcher = [str(TORCHRUN), "--nnodes", "2", "--node_rank", str(node_rank)]
        rendezvous = ["--nproc_per_node", "1", "--master_addr", "127.0.0.1"]
        script = [f"--master_port={port}", str(REPO / "scripts" / "train.py"), *overrides]
        nodes.append(
            subprocess.Popen(
                [*launcher, *rendezvous, *script],
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        time.sleep(1.5)  # the second node starts in another second: another Hydra folder name
    outputs = []
    for node in nodes:
        try:
            outputs.append(node.communicate(timeout=300)[0])
        finally:
            node.kill()
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]
    return outputs


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The job's working directory and each node's output, once both have finished."""
    workdir = tmp_path_factory.mktemp("torchrun")
    return workdir, run_two_nodes(workdir, *COMMAND)


@pytest.fixture(scope="module")
def two_nodes_dwa(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The working directory and the run folder of a Dice + CE job weighted by DWA on two
    torchrun nodes."""
    workdir = tmp_path_factory.mktemp("torchrun_dwa")
    run_two_nodes(workdir, *COMMAND[:-2], *DWA)
    (run_dir,) = (workdir / "logs" / "runs").glob("*/*")
    return workdir, run_dir


def test_the_job_has_one_output_folder_written_by_rank_0(two_nodes):
    workdir, outputs = two_nodes
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    (run_dir,) = (workdir / "logs" / "runs").glob("*/*")
    assert sorted(path.name for path in workdir.iterdir()) == ["logs"]  # rank 1 wrote nothing
    assert len(list((run_dir / "tensorboard").glob("version_*"))) == 1
    assert list((run_dir / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_the_logged_val_loss_is_the_single_process_loss(two_nodes):
    workdir, _ = two_nodes
    (run_dir,) = (workdir / "logs" / "runs").glob("*/*")
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    x, y = datamodule.splits["val"].tensors
    assert len(y) % 2  # an odd size: Lightning's sampler repeats a sample across the nodes
    model = Classifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(x).double(), y).item()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5, abs=0)


def test_only_the_other_ranks_of_torchrun_and_srun_get_the_follower_overrides():
    assert follower_overrides([], {}) == []
    assert follower_overrides([], {"RANK": "1"}) == []  # not torchrun: Lightning's own launcher
    assert follower_overrides([], {"TORCHELASTIC_RUN_ID": "none", "RANK": "0"}) == []
    torchrun_rank_1 = {"TORCHELASTIC_RUN_ID": "none", "RANK": "1"}
    assert follower_overrides([], torchrun_rank_1) == [
        "hydra.run.dir=.",
        "hydra.output_subdir=null",
        "hydra/job_logging=stdout",
    ]
    srun_task_1 = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}
    assert "hydra.run.dir=." in follower_overrides([], srun_task_1)
    assert follower_overrides([], {**srun_task_1, "SLURM_PROCID": "0"}) == []
    # a batch script's own process, and a task of a job that submitit set up
    assert follower_overrides([], {"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}) == []
    assert follower_overrides([], {**srun_task_1, "SUBMITIT_EXECUTOR": "slurm"}) == []
    # a folder named on the command line is every process's, so that each finds checkpoints
    fixed = follower_overrides(["loss=focal", "hydra.run.dir=logs/job"], torchrun_rank_1)
    assert fixed == ["hydra.output_subdir=null", "hydra/job_logging=stdout"]


def test_dwa_weights_are_the_same_on_both_nodes_after_every_step(two_nodes_dwa):
    workdir, run_dir = two_nodes_dwa
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", mmap=True)
    steps = checkpoint["global_step"]
    for rank in (0, 1):
        # each node writes into its trainer's folder: rank 0's run folder, rank 1's working one
        (path,) = workdir.rglob(f"loss_weights_agree_rank{rank}.json")
        report = json.loads(path.read_text())
        assert report["world_size"] == 2
        assert report["checked"] == steps
        assert any("dwa" in name or "history" in name for name in report["names"]), report


def test_dwa_weights_follow_the_formula_from_the_synced_epoch_means(two_nodes_dwa):
    _, run_dir = two_nodes_dwa
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", mmap=True)
    state = checkpoint["state_dict"]
    before, previous = state["criterion.learned.history"].tolist()
    assert int(state["criterion.learned.epochs_seen"]) == DWA_EPOCHS
    expected = dwa_by_hand(previous, before, temperature=2.0)
    assert state["criterion.learned.lambdas"].tolist() == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx([1.0, 1.0])


def test_the_slurm_task_check_leaves_other_jobs_alone():
    two_tasks = {"SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_NAME": "train"}
    check_slurm_tasks(2, 1, two_tasks)  # matches
    check_slurm_tasks(4, 1, {})  # not under Slurm
    check_slurm_tasks("auto", 1, two_tasks)  # Lightning decides the count
    check_slurm_tasks(4, 1, {**two_tasks, "SLURM_JOB_NAME": "interactive"})  # a salloc shell
    with pytest.raises(ValueError, match=r"srun started 2 task\(s\).*runs 4 processes"):
        check_slurm_tasks(2, 2, two_tasks)
