"""The two-task demo (experiment=multitask) and the script that compares weightings on it."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, quiet_trainer, run_python

from lossplug.demo.training import build

COMPARE = REPO / "scripts" / "compare_weightings.py"


def test_validation_values_match_a_recomputation_over_every_sample(compose_train):
    job = build(
        compose_train(
            "experiment=multitask",
            "loss.weights.ink=0.01",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=5",
        )
    )
    model, data = job.model, job.datamodule
    job.trainer.fit(model, datamodule=data)
    data.setup("validate")
    loader = data.val_dataloader()
    inputs = torch.cat([batch[0] for batch in loader])
    labels = torch.cat([batch[1] for batch in loader])
    assert len(inputs) % loader.batch_size != 0  # a short last batch: sample-weighted means

    (logged,) = quiet_trainer().validate(model, loader, verbose=False)

    reference = copy.deepcopy(model).double().eval()
    x = inputs.double()
    with torch.no_grad():
        features = reference.encoder(x)
        scores = reference.digit_head(features)
        ink = reference.ink_head(features)[:, 0]
    ink_target = x.sum(dim=1)  # every pixel's value in [0, 1], added up
    ce = F.cross_entropy(scores, labels).item()
    mse = (ink - ink_target).square().mean().item()
    assert logged["val/loss/digit"] == pytest.approx(ce, rel=1e-5)
    assert logged["val/loss/ink"] == pytest.approx(mse, rel=1e-5)
    assert logged["val/loss"] == pytest.approx(ce + 0.01 * mse, rel=1e-5)
    assert logged["val/acc"] == pytest.approx((scores.argmax(1) == labels).double().mean().item())
    assert logged["val/ink_mae"] == pytest.approx((ink - ink_target).abs().mean().item(), rel=1e-5)


def test_the_model_routes_each_head_to_its_target(compose_train):
    model = build(compose_train("experiment=multitask")).model
    x = torch.rand(4, 64)
    labels = torch.tensor([0, 3, 9, 3])
    inputs, target = model.split_batch((x, labels))
    assert inputs is x
    assert torch.equal(target["digit"], labels)
    assert torch.allclose(target["ink"], x.sum(dim=1))
    output = model(x)
    assert output["digit"].shape == (4, 10)
    assert output["ink"].shape == (4,)
    assert output["features"].shape == (4, 128)
    components = model.criterion.components(output, target)
    expected = {
        "digit": F.cross_entropy(output["digit"], labels),
        "ink": (output["ink"] - x.sum(dim=1)).square().mean(),
    }
    for name, value in expected.items():
        assert components[name].item() == pytest.approx(value.item())


@pytest.mark.slow  # about 40 s: two training processes of one epoch
def test_the_comparison_script_writes_each_runs_final_values_and_a_plot(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    result = run_python(
        COMPARE,
        *("--methods", "fixed", "fixed_scaled", "--seeds", "1", "--epochs", "1"),
        *("--out", str(out), "--workdir", str(work)),
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    page = (out / "multitask.md").read_text()
    assert page.startswith("Written by `python scripts/compare_weightings.py --methods fixed")
    rows = {
        cells[0]: cells
        for line in page.splitlines()
        if line.startswith("| fixed")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert set(rows) == {"fixed", "fixed_scaled"}
    assert rows["fixed_scaled"][1] == "`loss.weights.ink=0.01`"
    for method, cells in rows.items():
        metrics = json.loads((work / method / "1" / "metrics.json").read_text())
        assert cells[2] == f"{metrics['test/acc']:.3f}"
        assert cells[3] == f"{metrics['test/ink_mae']:.2f}"
        overrides = (work / method / "1" / ".hydra" / "overrides.yaml").read_text()
        assert "experiment=multitask" in overrides and "seed=1" in overrides
    assert (out / "multitask.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_comparison_script_refuses_zero_seeds(tmp_path):
    result = run_python(COMPARE, "--seeds", "0", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert re.search(r"--seeds and --epochs must be >= 1, got 0 and 15", result.stderr)
