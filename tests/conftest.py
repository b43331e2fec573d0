"""Fixtures for the config, training-script and mixin tests."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lossplug.kernels import THRESHOLDS

REPO = Path(__file__).resolve().parents[1]
#: modules the tests and the jobs share (on pytest's path, and on the jobs' PYTHONPATH)
HELPERS = REPO / "tests" / "helpers"
#: the scripts that DDP tests run as processes of their own
JOBS = REPO / "tests" / "jobs"
#: the training entry point the subprocess tests run.
TRAIN = REPO / "scripts" / "train.py"
#: the demo app's own config (the library's groups come from lossplug/conf).
DEMO_CONF = REPO / "conf"

#: overrides that keep an in-process run of conf/train.yaml small and quiet.
QUIET = (
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "trainer.enable_checkpointing=false",
    "test=false",
)


@pytest.fixture
def compose_train(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose ``train.yaml`` with overrides, as Hydra would for ``scripts/train.py``.

    ``${hydra:runtime.output_dir}`` resolves to the test's ``tmp_path``.
    """

    def compose_(*overrides: str) -> DictConfig:
        with initialize_config_dir(str(DEMO_CONF), version_base="1.3"):
            cfg = compose("train", overrides=[*QUIET, *overrides], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield compose_
    GlobalHydra.instance().clear()


def run_python(
    *args: str | Path, cwd: Path, timeout: float, full_error: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the current Python on ``args`` in ``cwd``; output captured as text.

    With ``full_error`` (the default) Hydra and lossplug print whole traces
    (``HYDRA_FULL_ERROR=1``); without it, the one-line errors users see.
    """
    paths = [str(HELPERS), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    if not full_error:
        del env["HYDRA_FULL_ERROR"]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # a session of its own, so that a timeout ends the DDP processes it started too
    with subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            raise AssertionError(
                f"{args[0]} did not end within {timeout} s (a hang?); its output ends with:\n"
                f"{(stdout + stderr)[-3000:]}"
            ) from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a job's rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def quiet_trainer(**options: object) -> pl.Trainer:
    """A one-epoch CPU ``Trainer`` without logger, checkpoints, progress bar or sanity check."""
    defaults = {
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(**{**defaults, **options})


def softmax_passes(run: Callable[[], object]) -> int:
    """How many softmax/log-softmax kernels ``run()`` launches (forward and backward)."""
    with torch.profiler.profile() as prof:
        run()
    names = ("aten::_softmax", "aten::_log_softmax")
    return sum(event.count for event in prof.key_averages() if event.key in names)


def dwa_by_hand(previous: list[float], before: list[float], temperature: float) -> list[float]:
    r"""Dynamic Weight Average's weights from two epochs' means (Liu et al. 2019, eq. 1).

    :math:`\lambda_k = K \exp(r_k / T) / \sum_i \exp(r_i / T)` with
    :math:`r_k = L_k(t-1) / L_k(t-2)`.
    """
    exps = [math.exp(a / b / temperature) for a, b in zip(previous, before, strict=True)]
    return [len(exps) * e / sum(exps) for e in exps]


def famo_by_hand(
    steps: list[list[float]], lr: float, weight_decay: float
) -> list[tuple[list[float], list[float]]]:
    r"""FAMO's logits and factors after each step, from each step's term values (Liu et al. 2023).

    From step 1 on, :math:`\delta = \log L(t-1) - \log L(t)` and the logits take one step of
    ``torch.optim.Adam`` (with ``weight_decay``) on the gradient :math:`J^\top \delta` of
    :math:`z^\top \delta`, :math:`J = \mathrm{diag}(z) - z z^\top` the softmax's Jacobian
    matrix. Then the factors are :math:`c z_i / L_i(t)` with :math:`c = 1 / \sum_j z_j / L_j(t)`.
    In float64.
    """
    logits = torch.zeros(len(steps[0]), dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([logits], lr=lr, weight_decay=weight_decay)
    result = []
    for t, values in enumerate(steps):
        losses = torch.tensor(values, dtype=torch.float64)
        if t > 0:
            delta = torch.tensor(steps[t - 1], dtype=torch.float64).log() - losses.log()
            z = torch.softmax(logits.detach(), dim=0)
            jacobian = torch.diag(z) - torch.outer(z, z)
            logits.grad = jacobian.T @ delta
            adam.step()
        z = torch.softmax(logits.detach(), dim=0)
        c = 1 / (z / losses).sum()
        result.append((logits.tolist(), (c * z / losses).tolist()))
    return result


def kernels_from_any_size(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Let the kernels ``names`` (default: every kernel) apply from size 0, for one test."""
    for name in names or tuple(THRESHOLDS):
        monkeypatch.setitem(THRESHOLDS, name, dataclasses.replace(THRESHOLDS[name], minimum=0))


@pytest.fixture(params=["plain", "kernels"])
def kernel_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the plain losses, and with every kernel applying from size 0."""
    if request.param == "plain":
        monkeypatch.setenv("LOSSPLUG_KERNELS", "0")
    else:
        kernels_from_any_size(monkeypatch)
    return request.param


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tiny tensors on a shared machine: one thread (here and in subprocesses) is fastest."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)
