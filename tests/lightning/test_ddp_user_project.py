"""A user's project under 2-process DDP with Lightning's defaults on (see the job's docstring).

Every epoch value lossplug logs is compared with the loss recomputed over the whole dataset
in one process, so the samples Lightning's ``DistributedSampler`` repeats must be left out;
the user's own torchmetrics ``Metric`` and ``sync_dist=True`` values must not make the two
processes run their collectives in different orders (a hang, turned into a failure by the
timeout).
"""

from __future__ import annotations

import json

import pytest
from conftest import JOBS, run_python
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

COMPONENTS = ("loss", "ce", "focal")


@pytest.fixture(scope="module")
def user_run(tmp_path_factory) -> tuple[dict, EventAccumulator]:
    out = tmp_path_factory.mktemp("ddp_user_project")
    result = run_python(JOBS / "ddp_user_project_job.py", out, cwd=JOBS, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    events = EventAccumulator(str(out / "tb" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    return json.loads((out / "reference.json").read_text()), events


def _key(stage: str, component: str, suffix: str = "") -> str:
    name = f"{stage}/loss" if component == "loss" else f"{stage}/loss/{component}"
    return name + suffix


@pytest.mark.parametrize("component", COMPONENTS)
def test_training_epoch_counts_each_real_sample_once(user_run, component):
    run, _ = user_run
    expected = run["reference"]["train"][component]
    assert run["fit_metrics"][_key("train", component)] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("loader", [0, 1])
def test_each_validation_loader_gets_its_own_exact_values(user_run, component, loader):
    run, events = user_run
    key = _key("val", component, f"/dataloader_idx_{loader}")
    expected = run["reference"][f"val{loader}"][component]
    assert run["fit_metrics"][key] == pytest.approx(expected, rel=1e-6)
    assert events.Scalars(key)[-1].value == pytest.approx(expected, rel=1e-6)
    assert _key("val", component) not in run["fit_metrics"]  # never pooled


@pytest.mark.parametrize("component", COMPONENTS)
def test_one_test_loader_keeps_the_plain_tags(user_run, component):
    run, events = user_run
    expected = run["reference"]["test"][component]
    assert run["test_metrics"][_key("test", component)] == pytest.approx(expected, rel=1e-6)
    assert events.Scalars(_key("test", component))[-1].value == pytest.approx(expected, rel=1e-6)


def test_the_user_s_metrics_are_logged_beside_lossplug_s(user_run):
    run, events = user_run
    assert 0 <= run["fit_metrics"]["train/acc"] <= 1
    assert 0 <= run["test_metrics"]["test/acc"] <= 1
    for loader in (0, 1):
        assert 0 <= run["fit_metrics"][f"val/acc/dataloader_idx_{loader}"] <= 1
    assert len(events.Scalars("train/loss")) == 2  # one point an epoch


def test_computing_the_loss_runs_no_collective(user_run):
    run, _ = user_run
    assert run["collectives_in_loss"] == []


def test_a_criterion_only_one_process_computes_is_logged_on_both(tmp_path):
    job = JOBS / "ddp_names_job.py"
    result = run_python(job, tmp_path, cwd=JOBS, timeout=180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [rank["count"] for rank in ranks] == [16, 16]  # the sampler shared them out
    everything = (ranks[0]["own_samples"] + ranks[1]["own_samples"]) / 2
    for rank in ranks:  # the same values on both; aux is rank 1's samples alone
        assert rank["metrics"]["train/aux"] == pytest.approx(ranks[1]["own_samples"], rel=1e-6)
        assert rank["metrics"]["train/loss"] == pytest.approx(everything, rel=1e-6)
    assert ranks[0]["own_samples"] != pytest.approx(ranks[1]["own_samples"], rel=1e-3)


def test_a_nan_on_one_process_stops_both_at_the_same_point():
    result = run_python(JOBS / "ddp_nonfinite_val_job.py", cwd=JOBS, timeout=180)
    assert result.returncode != 0
    assert "validation loss on process 1 of 2 at epoch 0, batch 1" in result.stderr
    assert "Non-finite val loss on another process" in result.stderr
