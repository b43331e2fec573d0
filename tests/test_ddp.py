"""trainer=ddp_sim: two real processes on CPU, talking over gloo, through scripts/train.py."""

from __future__ import annotations

import json

from conftest import REPO, run_python


def test_ddp_sim_trains_with_two_processes(tmp_path):
    result = run_python(
        REPO / "scripts" / "train.py",
        "trainer=ddp_sim",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=300,  # a hang (e.g. ranks logging different keys) fails instead of blocking CI
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Processes: 2" in result.stdout
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val/acc"] > 0.8  # two epochs, each process on half the data
    assert metrics["test/loss/cross_entropy"] == metrics["test/loss"]
