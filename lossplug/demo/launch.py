"""One output folder for a job whose processes were started apart (``torchrun`` on each node).

Lightning's own launcher starts the other processes of a one-node job itself and tells them the
run's folder. ``torchrun`` starts every process on its own, so Hydra would give each one a
folder of its own, named after the second it started in. The processes other than global rank
0 write nothing there anyway (the logger, checkpoints and metrics are rank 0's; a checkpoint's
folder is broadcast from rank 0), so :func:`follower_overrides` points their Hydra run at the
working directory and turns off Hydra's own files and log file for them (their lines still
reach the console).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def follower_overrides(environment: Mapping[str, str] = os.environ) -> list[str]:
    """Hydra overrides for a process ``torchrun`` started that is not global rank 0.

    Args:
        environment: the process's environment (``torchrun`` sets ``TORCHELASTIC_RUN_ID`` and
            ``RANK``).

    Returns:
        ``[]`` for global rank 0 and outside ``torchrun``; otherwise overrides that create no
        folder and write no file.
    """
    if "TORCHELASTIC_RUN_ID" not in environment or environment.get("RANK", "0") == "0":
        return []
    return ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]
