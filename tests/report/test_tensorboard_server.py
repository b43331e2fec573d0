"""A real TensorBoard server over a finished run serves every loss component over HTTP."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_runs import tiny_sweep

from lossplug.report.server import get_json, tensorboard_server

START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny cross-entropy run (job 0 of the shared sweep)."""
    return tiny_sweep(tmp_path_factory) / "0"


@pytest.fixture(scope="module")
def tensorboard_url(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of ``tensorboard --logdir run_dir`` on 127.0.0.1 and a port the OS picks."""
    yield from serve(run_dir)


@pytest.fixture(scope="module")
def sweep_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server over the whole sweep (two runs), as ``tensorboard --logdir logs/`` is."""
    with tensorboard_server(tiny_sweep(tmp_path_factory), "val/loss/focal", START_TIMEOUT_S) as url:
        yield url  # once both runs are loaded


def serve(logdir: Path) -> Iterator[str]:
    """The address of ``tensorboard --logdir logdir``, once it serves ``val/loss``."""
    with tensorboard_server(logdir, timeout=START_TIMEOUT_S) as url:
        yield url


def test_the_server_lists_the_total_and_every_component(tensorboard_url):
    tags = get_json(f"{tensorboard_url}/data/plugin/scalars/tags")
    assert list(tags) == ["tensorboard/version_0"]
    served = set(tags["tensorboard/version_0"])
    assert {"val/loss", "val/loss/cross_entropy", "val/acc"} <= served
    assert any(tag.startswith("train/loss") for tag in served)
    assert any(tag.startswith("train/loss/cross_entropy") for tag in served)


def test_the_server_returns_the_logged_values(tensorboard_url, run_dir):
    def scalars(tag: str) -> list[list[float]]:
        query = urllib.parse.urlencode({"run": "tensorboard/version_0", "tag": tag})
        return get_json(f"{tensorboard_url}/data/plugin/scalars/scalars?{query}")

    total, component = scalars("val/loss"), scalars("val/loss/cross_entropy")
    assert len(total) == 2  # [wall_time, step, value] for each of the two epochs
    # the last epoch's value is what the job reported at its end
    final = json.loads((run_dir / "metrics.json").read_text())["val/loss"]
    assert total[-1][2] == pytest.approx(final, rel=1e-6)
    # a single loss: the total is its one component
    assert [value for _, _, value in component] == pytest.approx([v for _, _, v in total])
    assert total[-1][2] < total[0][2]  # it learns


def test_custom_scalars_show_one_set_of_charts_for_a_logdir_of_several_runs(sweep_url):
    """A cross-entropy run and a focal run: one chart per stage, each with data, none twice."""
    tags = get_json(f"{sweep_url}/data/plugin/scalars/tags")
    assert len(tags) == 2
    served = {tag for run_tags in tags.values() for tag in run_tags}
    layout = get_json(f"{sweep_url}/data/plugin/custom_scalars/layout")
    charts = [chart for category in layout["category"] for chart in category["chart"]]
    titles = [chart["title"] for chart in charts]
    assert titles == [
        "train_step loss and components",
        "train loss and components",
        "val loss and components",
    ]  # no test stage (test=false), loss weights or gradient diagnostics: no run logs them
    for chart in charts:
        patterns = chart["multiline"]["tag"]
        assert any(re.search(p, tag) for p in patterns for tag in served), chart["title"]
    val = next(chart for chart in charts if chart["title"] == "val loss and components")
    for tag in ("val/loss", "val/loss/cross_entropy", "val/loss/focal"):
        assert any(re.search(p, tag) for p in val["multiline"]["tag"]), tag
    assert not any(re.search(p, "val/acc") for p in val["multiline"]["tag"])


@pytest.fixture(scope="module")
def two_layouts_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server over a run that wrote its layout twice, as a run that fits and then tests does."""
    from torch.utils.tensorboard import SummaryWriter

    from lossplug.tensorboard import custom_scalars_layout

    logdir = tmp_path_factory.mktemp("two_layouts")
    with SummaryWriter(logdir) as writer:
        writer.add_custom_scalars(custom_scalars_layout(stages=("train", "val"), weights=False))
        writer.add_scalar("val/loss", 1.0, 0)
        writer.add_custom_scalars(custom_scalars_layout(stages=("val", "test"), weights=False))
    yield from serve(logdir)


def test_tensorboard_shows_a_runs_last_layout(two_layouts_url):
    layout = get_json(f"{two_layouts_url}/data/plugin/custom_scalars/layout")
    titles = [chart["title"] for category in layout["category"] for chart in category["chart"]]
    assert titles == ["val loss and components", "test loss and components"]


@pytest.fixture(scope="module")
def default_logger_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A run with Lightning's default logger, as an own project has it; its final val/loss."""
    import lightning as L
    from exact_modules import Classifier, classes, loader

    root = tmp_path_factory.mktemp("default_logger")
    hinge = {"_target_": "lossplug.losses.HingeLoss", "mode": "multiclass", "squared": False}
    trainer = L.Trainer(
        max_epochs=2, default_root_dir=root, enable_progress_bar=False, enable_checkpointing=False
    )
    trainer.fit(Classifier(loss=hinge, lr=0.1), loader(classes(40), 10), loader(classes(20), 10))
    return root / "lightning_logs", float(trainer.callback_metrics["val/loss"])


@pytest.fixture(scope="module")
def default_logger_url(default_logger_run, tmp_path_factory) -> Iterator[str]:
    yield from serve(default_logger_run[0])


def test_hparams_show_the_final_metrics_once_and_readable_booleans(
    default_logger_url, default_logger_run
):
    """With Lightning's default logger too: no hp_metric = -1, the final val/loss instead."""
    body = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 10,
    }
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        groups = get_json(f"{default_logger_url}/data/plugin/hparams/session_groups", body)
        if groups.get("sessionGroups"):
            break
        time.sleep(0.5)
    (group,) = groups["sessionGroups"]  # one run, one row
    metrics = {value["name"]["tag"]: value["value"] for value in group["metricValues"]}
    assert list(metrics) == ["hparams/val/loss"]
    assert metrics["hparams/val/loss"] == pytest.approx(default_logger_run[1], rel=1e-6)
    assert group["hparams"]["loss/squared"] == "false"
    assert hparams_writes(default_logger_run[0]) == 1  # hyperparameters logged once
    assert group["hparams"]["loss/_target_"] == "lossplug.losses.HingeLoss"


def hparams_writes(logdir: Path) -> int:
    """How many times the runs under ``logdir`` wrote their hyperparameters."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return sum(
        value.tag == "_hparams_/session_start_info"
        for path in logdir.rglob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
    )


def test_a_run_without_validation_still_writes_its_hyperparameters_once(tmp_path):
    import lightning as L
    from exact_modules import Classifier, classes, loader

    trainer = L.Trainer(
        max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(Classifier(loss="cross_entropy"), loader(classes(20), 10))
    logdir = tmp_path / "lightning_logs"
    assert hparams_writes(logdir) == 1  # with the final training loss as its metric
    assert "check_inputs: first" in (logdir / "version_0" / "hparams.yaml").read_text()
