"""Resuming a training job where it stopped, its TensorBoard curves included.

A run killed mid-epoch (SIGKILL, a pre-empted node, a crash) restarts from its last
checkpoint. Lightning restores the epoch and step counters, the optimizer, the scheduler and
every module's state: the model, scheduled and learned loss weights (buffers and parameters
of the criterion) and lossplug's count of skipped non-finite steps. The TensorBoard run goes
on too: the resumed job writes into the same version directory and first purges every event
the killed job logged at or after the checkpoint's step (``SummaryWriter(purge_step=...)``),
so each step shows once, without gaps or duplicates.

The resumed job logs its first step at the checkpoint's ``global_step``, wherever the
checkpoint was saved (mid-epoch every ``every_n_train_steps``, or at an epoch's end): that is
the purge step. A Slurm job that Lightning requeued on Slurm's signal resumes the same way,
from the checkpoint Lightning saved on the signal (:func:`requeue_checkpoint`). This holds
for automatic optimization with one optimizer, what :class:`~lossplug.LossPlugMixin` does.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

#: the ``ckpt_path`` that means "the newest ``last.ckpt`` of the run's checkpoint folders".
LAST = "last"
_VERSION_DIR = re.compile(r"^version_(\d+)$")
#: the checkpoints Lightning saves on Slurm's requeue signal: ``hpc_ckpt_N.ckpt``.
_HPC_CHECKPOINT = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")


def find_checkpoint(ckpt_path: str | None, callbacks: Sequence[Callback]) -> str | None:
    """The checkpoint file a run resumes from.

    Args:
        ckpt_path: ``None``, a checkpoint file, or ``"last"``: the newest last checkpoint in
            the ``dirpath`` of the :class:`~lightning.pytorch.callbacks.ModelCheckpoint`
            callbacks, named as each callback names it (``CHECKPOINT_NAME_LAST``, default
            ``last``, and ``FILE_EXTENSION``, as Lightning reads ``"last"``). Lightning's other
            special values (``"best"``, ``"hpc"``, ...) come back unchanged.
        callbacks: the run's callbacks.

    Returns:
        The file, or ``ckpt_path`` itself when it names none; ``"last"`` without any last
        checkpoint stays ``"last"`` (Lightning then warns and starts afresh).
    """
    if ckpt_path != LAST:
        return ckpt_path
    found = {
        path
        for callback in callbacks
        if isinstance(callback, ModelCheckpoint) and callback.dirpath
        for path in _last_checkpoints(callback)
    }
    if not found:
        return ckpt_path
    return str(max(found, key=lambda path: path.stat().st_mtime))


def _last_checkpoints(callback: ModelCheckpoint) -> list[Path]:
    """The files of ``callback``'s folder named as its last checkpoint (``last``, ``last-v1``)."""
    folder = Path(callback.dirpath)
    if not folder.is_dir():
        return []
    name = re.compile(rf"^{re.escape(callback.CHECKPOINT_NAME_LAST)}(-v\d+)?$")
    return [
        path
        for path in folder.iterdir()
        if path.suffix == callback.FILE_EXTENSION and name.match(path.stem)
    ]


def requeue_checkpoint(folder: str | Path) -> str | None:
    """The checkpoint a requeued Slurm job resumes from: the newest ``hpc_ckpt_N.ckpt``.

    On Slurm's requeue signal Lightning saves ``hpc_ckpt_N.ckpt`` in the trainer's
    ``default_root_dir`` and requeues the job; the job starts again in the same folder and
    resumes from the highest ``N``, as Lightning itself does for ``ckpt_path=None``.

    Args:
        folder: the trainer's ``default_root_dir``.

    Returns:
        The file, or ``None`` outside a Slurm job or when the folder holds none.
    """
    if not SLURMEnvironment.detect():
        return None
    newest = _highest_numbered(Path(folder), _HPC_CHECKPOINT)
    return str(newest[1]) if newest else None


def is_checkpoint_file(ckpt_path: str | None) -> bool:
    """Whether ``ckpt_path`` is an existing file (not ``None`` or a special value)."""
    return ckpt_path is not None and Path(ckpt_path).is_file()


def checkpoint_step(path: str | Path) -> int:
    """The ``global_step`` stored in a Lightning checkpoint: the resumed run's first step.

    The file is memory-mapped, so its tensors are not read.
    """
    checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    return int(checkpoint["global_step"])


def latest_version(root_dir: str | Path) -> int | None:
    """The highest ``version_N`` folder under a logger's root, or ``None`` if there is none."""
    newest = _highest_numbered(Path(root_dir), _VERSION_DIR)
    return newest[0] if newest else None


def _highest_numbered(root: Path, name: re.Pattern[str]) -> tuple[int, Path] | None:
    """The entry of ``root`` whose name matches ``name`` with the highest number (its group 1)."""
    if not root.is_dir():
        return None
    numbered = [
        (int(match.group(1)), path) for path in root.iterdir() if (match := name.match(path.name))
    ]
    return max(numbered, default=None)


def resume_command(script: str, overrides: Sequence[str], run_dir: str | Path) -> str:
    """The command line that resumes a Hydra run: its overrides, its folder, the last checkpoint.

    Args:
        script: the entry point, e.g. ``"scripts/train.py"``.
        overrides: the run's task overrides (``HydraConfig.get().overrides.task``).
        run_dir: the run's output folder.

    Returns:
        ``python script overrides... hydra.run.dir=run_dir ckpt_path=last``, shell-quoted.
    """
    kept = [item for item in overrides if not item.startswith("ckpt_path=")]
    words = ["python", script, *kept, f"hydra.run.dir={run_dir}", f"ckpt_path={LAST}"]
    return shlex.join(words)
