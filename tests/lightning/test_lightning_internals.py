"""The Lightning bookkeeping lossplug reads (lossplug/_lightning.py) is where it expects.

A Lightning release that moves any of it fails here, by name, instead of deep in a run.
"""

from __future__ import annotations

import lightning as L
from conftest import quiet_trainer
from exact_modules import Classifier, classes, loader
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lossplug import _lightning


class Recorder(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[bool, int, bool]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append(
            (
                _lightning.writes_step_logs(trainer),
                _lightning.logging_step(trainer),
                _lightning.is_last_batch(trainer),
            )
        )


def test_the_three_facts_lossplug_reads_from_lightning():
    recorder = Recorder()
    trainer = quiet_trainer(callbacks=[recorder], log_every_n_steps=2)
    trainer.fit(Classifier(), loader(classes(40), 10))  # 4 batches, 4 optimizer steps
    writes, steps, last = zip(*recorder.seen, strict=True)
    assert writes == (False, True, False, True)  # steps 2 and 4 are logging steps
    assert steps == (0, 1, 2, 3)  # the step each batch's logs are written at
    assert last == (False, False, False, True)


def test_the_prefix_a_logger_puts_before_its_keys(tmp_path):
    assert _lightning.logger_prefix(TensorBoardLogger(tmp_path, prefix="run")) == "run"
    assert _lightning.logger_prefix(TensorBoardLogger(tmp_path)) == ""
    assert _lightning.logger_prefix(CSVLogger(tmp_path)) == ""
