"""Logging filters of the demo app's job logging (``conf/hydra/job_logging/demo.yaml``)."""

from __future__ import annotations

import logging


class DropTips(logging.Filter):
    """Leave out Lightning's promotional tips (``💡 Tip: ...``), which say nothing of the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is kept: everything but a tip."""
        return not record.getMessage().startswith("💡 Tip:")
