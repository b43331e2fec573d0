"""Loss-component logging under real 2-process DDP (gloo, CPU), read back from TensorBoard.

The job (tests/jobs/ddp_loss_job.py) gives each rank an unequal share of the data with a smaller
last batch; the epoch values must still be the exact mean over the whole dataset.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import JOBS, run_python
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from lossplug.tensorboard import CHART_STAGES as STAGE_CHARTS

JOB = JOBS / "ddp_loss_job.py"


def run_job(
    out: Path, mode: str, sharding: str
) -> tuple[dict, dict[str, list[float]], EventAccumulator]:
    result = run_python(JOB, out, mode, sharding, cwd=out, timeout=240)  # a hang fails
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    events = EventAccumulator(str(out / "tb" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()  # every event file of the run: fit's and test's
    scalars = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return json.loads((out / "reference.json").read_text()), scalars, events


#: Lightning's DistributedSampler (its defaults, as users run), and a user's own uneven shards
SHARDINGS = ["sampler", "own"]


@pytest.fixture(scope="module", params=SHARDINGS)
def composite_run(tmp_path_factory, request):
    return run_job(tmp_path_factory.mktemp("composite"), "composite", request.param)


def test_every_stage_logs_total_and_components(composite_run):
    _, scalars, _ = composite_run
    for stage in ("train", "val", "test"):
        assert {f"{stage}/loss", f"{stage}/loss/ce", f"{stage}/loss/focal"} <= set(scalars)
    assert {"train_step/loss", "train_step/loss/ce", "train_step/loss/focal"} <= set(scalars)
    assert "hp_metric" not in scalars and "hparams/val/loss" in scalars
    assert len(scalars["val/loss"]) == 2 and len(scalars["test/loss"]) == 1


def test_epoch_total_is_the_weighted_sum_of_components(composite_run):
    _, scalars, _ = composite_run
    for stage in ("train", "val", "test"):
        for total, ce, focal in zip(
            scalars[f"{stage}/loss"],
            scalars[f"{stage}/loss/ce"],
            scalars[f"{stage}/loss/focal"],
            strict=True,
        ):
            assert total == pytest.approx(1.0 * ce + 0.5 * focal, rel=1e-6)


def test_epoch_values_are_the_exact_mean_over_the_whole_dataset(composite_run):
    reference, scalars, _ = composite_run
    for tag, expected in reference["reference"].items():
        assert scalars[tag][-1] == pytest.approx(expected, abs=1e-5)
        assert scalars[tag.replace("val/", "test/")][-1] == pytest.approx(expected, abs=1e-5)


def test_loss_logging_adds_one_collective_per_epoch(composite_run, tmp_path):
    reference, _, _ = composite_run
    assert reference["collectives"] == ["all_reduce"]  # 2 components
    many, scalars, _ = run_job(tmp_path, "many16", "sampler")
    assert many["collectives"] == ["all_reduce"]  # 16 components: still one
    for tag, expected in many["reference"].items():
        assert scalars[tag][-1] == pytest.approx(expected, abs=1e-5)


def test_custom_scalars_layout_charts_every_component(composite_run):
    _, scalars, events = composite_run
    assert "custom_scalars__config__" in events.Tags()["tensors"]
    layout = layout_pb2.Layout()
    # the last layout, which TensorBoard shows: written again when the test stage starts
    layout.ParseFromString(
        events.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0]
    )
    charts = {chart.title: chart.multiline.tag for chart in layout.category[0].chart}
    assert set(charts) == {f"{stage} loss and components" for stage in STAGE_CHARTS}
    for stage in STAGE_CHARTS:
        patterns = charts[f"{stage} loss and components"]
        charted = {tag for tag in scalars if any(re.search(p, tag) for p in patterns)}
        assert charted == {f"{stage}/loss", f"{stage}/loss/ce", f"{stage}/loss/focal"}


@pytest.mark.parametrize("sharding", SHARDINGS)
def test_a_rank_without_any_triplet_neither_hangs_nor_breaks_the_keys(tmp_path, sharding):
    _, scalars, _ = run_job(tmp_path, "triplet", sharding)
    assert {"train/loss/triplet", "val/loss/triplet", "test/loss/triplet"} <= set(scalars)
    assert all(value >= 0 for value in scalars["val/loss/triplet"])
