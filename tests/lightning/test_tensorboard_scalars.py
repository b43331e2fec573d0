"""write_scalars: one TensorBoard event of several values, read back as ordinary scalars."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lossplug.tensorboard import write_scalars


def test_tensorboard_reads_each_value_of_the_one_event_as_its_tag(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    write_scalars([logger], {"a/loss": 1.5, "a/loss/x": 0.25}, step=3)
    write_scalars([logger], {"a/loss": 1.0, "a/loss/x": 0.5}, step=4)
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("a/loss")] == [(3, 1.5), (4, 1.0)]
    assert [(e.step, e.value) for e in events.Scalars("a/loss/x")] == [(3, 0.25), (4, 0.5)]


def test_other_loggers_and_a_prefix_go_through_log_metrics(tmp_path):
    prefixed = TensorBoardLogger(tmp_path, name="tb", version=1, prefix="run")
    table = CSVLogger(tmp_path, name="csv", version=0)
    write_scalars([prefixed, table], {"a/loss": 2.0}, step=7)
    prefixed.experiment.flush()
    table.save()
    events = EventAccumulator(str(tmp_path / "tb" / "version_1"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("run-a/loss")] == [(7, 2.0)]
    with (tmp_path / "csv" / "version_0" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert rows == [{"a/loss": "2.0", "step": "7"}]


def test_a_finalized_tensorboard_logger_still_takes_scalars(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    write_scalars([logger], {"a/loss": 1.0}, step=0)
    logger.finalize("success")  # closes the event writer
    write_scalars([logger], {"a/loss": 2.0}, step=1)
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("a/loss")] == [(0, 1.0), (1, 2.0)]
