"""``gather=True``: under data parallelism, the loss and gradient of the global batch.

Two real processes over gloo (tests/jobs/gather_job.py), in float64, each with an uneven
slice of the batch, one DDP step per loss: every process's loss, components and counts, and
the DDP-averaged gradient of every parameter, equal those of one process on the
concatenated batch.
"""

from __future__ import annotations

import json

import pytest
from conftest import JOBS, free_port, run_python
from gather_cases import batch, losses, model, step

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("gather")
    result = run_python(JOBS / "gather_job.py", out, free_port(), cwd=out, timeout=180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def one_process() -> dict[str, dict]:
    x, labels = batch()
    net = model()
    return {name: step(net, criterion, x, labels) for name, criterion in losses(False).items()}


@pytest.mark.parametrize("name", list(losses(gather=False)))
def test_each_process_gets_the_loss_and_gradient_of_the_global_batch(two_processes, name):
    expected = one_process()[name]
    for rank, results in enumerate(two_processes):
        got = results[name]
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-12), rank
        assert got["components"] == pytest.approx(expected["components"], rel=1e-12), rank
        assert got["counts"] == expected["counts"], rank
        for parameter, grad in expected["grads"].items():
            assert got["grads"][parameter] == pytest.approx(grad, rel=1e-9, abs=1e-12), parameter


def test_the_global_batch_is_not_the_local_one(two_processes):
    # without gathering, rank 1 alone would have other pairs: the comparison above can fail
    x, labels = batch()
    local = losses(False)["infonce"](model()(x[6:]), labels[6:]).item()
    assert two_processes[1]["infonce"]["loss"] != pytest.approx(local, rel=1e-3)


def test_gather_must_be_a_bool():
    from lossplug.losses import SupConLoss

    with pytest.raises(TypeError, match=r"supcon: option 'gather' must be a bool, got 'yes'"):
        SupConLoss(gather="yes")
