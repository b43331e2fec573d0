"""A callback that slows training down, so a test can kill a run in the middle of an epoch."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl


class SlowSteps(pl.Callback):
    """Sleeps ``seconds`` at the end of every training batch.

    Args:
        seconds: how long each batch sleeps.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: Any) -> None:
        """Sleep."""
        time.sleep(self.seconds)
