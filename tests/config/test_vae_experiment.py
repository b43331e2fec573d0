"""The VAE demo (experiment=vae): a loss term the model computes, weighted and logged exactly."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import TRAIN, quiet_trainer, run_python

from lossplug.demo.training import build

QUIET_RUN = ("trainer.enable_progress_bar=false", "test=false")


@pytest.mark.slow  # about 10 s: a process of its own, two epochs
def test_the_command_line_run_logs_recon_and_the_weighted_kl(tmp_path):
    result = run_python(
        TRAIN,
        "experiment=vae",
        "loss.weights.kl=0.1",
        "trainer.max_epochs=2",
        *QUIET_RUN,
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"val/loss", "val/loss/recon", "val/loss/kl"} <= set(metrics)
    assert metrics["val/loss/kl"] > 0
    assert metrics["val/loss"] == pytest.approx(
        metrics["val/loss/recon"] + 0.1 * metrics["val/loss/kl"], rel=1e-5
    )
    assert metrics["train/loss"] == pytest.approx(
        metrics["train/loss/recon"] + 0.1 * metrics["train/loss/kl"], rel=1e-5
    )


def test_validation_values_match_a_recomputation_over_every_sample(compose_train):
    job = build(
        compose_train(
            "experiment=vae",
            "loss.weights.kl=0.1",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=5",
        )
    )
    model, data = job.model, job.datamodule
    job.trainer.fit(model, datamodule=data)  # a few steps: weights away from their init
    data.setup("validate")
    loader = data.val_dataloader()
    inputs = torch.cat([batch[0] for batch in loader])
    assert len(inputs) % loader.batch_size != 0  # a short last batch: sample-weighted means

    (logged,) = quiet_trainer().validate(model, loader, verbose=False)
    (again,) = quiet_trainer().validate(model, loader, verbose=False)
    assert again == logged  # z = mu in evaluation: deterministic

    reference = copy.deepcopy(model).double().eval()
    x = inputs.double()
    with torch.no_grad():
        mu, logvar = reference.posterior(reference.encoder(x)).chunk(2, dim=1)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)
        recon = F.mse_loss(reference.decoder(mu), x)
    assert kl.shape == (len(inputs),)
    assert logged["val/loss/kl"] == pytest.approx(kl.mean().item(), rel=1e-5)
    assert logged["val/loss/recon"] == pytest.approx(recon.item(), rel=1e-5)
    assert logged["val/loss"] == pytest.approx(recon.item() + 0.1 * kl.mean().item(), rel=1e-5)


def test_the_model_gives_per_sample_kl_and_its_input_as_target(compose_train):
    model = build(compose_train("experiment=vae")).model
    pl.seed_everything(0)
    x = torch.rand(5, 64)
    inputs, target = model.split_batch((x, torch.zeros(5, dtype=torch.long)))
    assert inputs is x and target is x
    model.eval()
    output = model(x)
    reconstruction, terms = output
    assert reconstruction.shape == x.shape
    assert set(model.model_terms(output)) == {"kl"} and terms["kl"].shape == (5,)
    assert torch.equal(model(x)[0], reconstruction)  # evaluation decodes the mean
    assert model.loss_inputs(output, target)[0] is reconstruction
    model.train()
    assert not torch.equal(model(x)[0], reconstruction)  # training samples z


def test_a_loss_without_the_model_term_is_refused_naming_it(compose_train):
    job = build(compose_train("experiment=vae", "loss=mse", "+trainer.fast_dev_run=true"))
    with pytest.raises(ValueError, match=r"the model gives term\(s\) \['kl'\]"):
        job.trainer.fit(job.model, datamodule=job.datamodule)


def test_a_negative_kl_weight_is_refused_in_one_line(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    result = subprocess.run(
        [
            sys.executable,
            str(TRAIN),
            "experiment=vae",
            "loss.weights.kl=-1",
            "+trainer.max_steps=1",
            "+trainer.limit_val_batches=1",
            *QUIET_RUN,
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,
        env={**env, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    last_line = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert result.returncode == 1, result.stderr[-3000:]
    assert last_line.startswith("Error: ")
    assert "option 'weights.kl' must be a finite number >= 0.0, got -1" in last_line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "tensorboard").exists()  # no training started
