"""Bad command lines: one line saying what is wrong and how to fix it; the trace on request.

Every case runs ``scripts/train.py`` as a user would, in a subprocess: stderr's last line
carries the message, there is no traceback, the exit code is 2 for an override that cannot
be parsed and 1 otherwise; with ``HYDRA_FULL_ERROR=1`` the traceback is back. The processes
run a few at a time (they mostly wait on imports); the message logic itself is also tested
in-process, where it is cheap: errors lossplug raises later in a run (an input check at the
first batch) are reported the same way, as :func:`user_error` goes by where an error was
raised, not when.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import DEMO_CONF, TRAIN
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from lossplug.config import (
    ConfigError,
    OverrideSyntaxError,
    check_command_line,
    one_line_errors,
    user_error,
)
from lossplug.losses import FocalLoss

#: appended to every command line: a case that wrongly got through would stop after a step,
#: leaving its TensorBoard folder (which ``fast_dev_run`` would not write) behind.
SAFETY = (
    "+trainer.max_steps=1",
    "+trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "test=false",
)


@dataclass(frozen=True)
class Cli:
    args: tuple[str, ...]
    message: str  #: what stderr's last line must contain
    exit_code: int = 1
    full_error: bool = False  #: run with HYDRA_FULL_ERROR=1


#: ``loss.gama=3``, ``loss=nonexistent``, ``loss.gamma=-1`` and ``optimizer.lr=-1`` run in
#: test_misuse.py's command-line rows, with the same checks.
ONE_LINE = {
    "unknown optimizer": Cli(
        ("optimizer=adamx",), "optimizer: no config named 'adamx'. Did you mean 'adam'?"
    ),
    "loss option not a number": Cli(
        ("loss=focal", "loss.gamma=abc"),
        "loss: option 'gamma' takes a number, got 'abc'; e.g. loss.gamma=2.0",
    ),
    "trainer option not an integer": Cli(
        ("trainer.max_epochs=abc",),
        "trainer: option 'max_epochs' takes an integer or null, got 'abc'",
    ),
    "negative composite weight": Cli(
        ("experiment=segmentation", "loss=dice_ce_terms", "loss.weights.dice=-1"),
        "composite: option 'weights.dice' must be a finite number >= 0.0, got -1",
    ),
    "trainer refuses a value": Cli(
        ("trainer.max_epochs=-2",), "trainer: `max_epochs` must be a non-negative integer or -1"
    ),
    "override syntax": Cli(
        ("loss=focal", "loss.gamma==3"),
        "cannot read the override 'loss.gamma==3' (extraneous input '='); "
        "did you mean 'loss.gamma=3'?",
        exit_code=2,
    ),
    "missing plus": Cli(
        ("trainer.gradient_clip_val=0.5",),
        "trainer: option 'gradient_clip_val' is not in the config yet; add it with a '+': "
        "+trainer.gradient_clip_val=0.5",
    ),
}
FULL_TRACE = {
    "before Hydra, with HYDRA_FULL_ERROR=1": Cli(
        ("optimizer=adamx",), "no config named 'adamx'", full_error=True
    ),
    "in the run, with HYDRA_FULL_ERROR=1": Cli(
        ("loss=focal", "loss.gamma=-1"), "option 'gamma' must be", full_error=True
    ),
    # torch's DataLoader, not lossplug or a config's target, refuses it: a trace, as for a bug
    "an error from deeper code": Cli(
        ("data.batch_size=0",), "batch_size should be a positive integer value"
    ),
}
CASES = {**ONE_LINE, **FULL_TRACE}


def _run(case: Cli, run_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env["PYTHONUNBUFFERED"] = "1"
    if case.full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run(
        [sys.executable, str(TRAIN), *case.args, *SAFETY, f"hydra.run.dir={run_dir}"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@dataclass(frozen=True)
class Run:
    process: Future[subprocess.CompletedProcess[str]]
    folder: Path  #: the run's Hydra output directory


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory) -> dict[str, Run]:
    """The selected cases' processes, started together, two at a time."""
    selected = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is request.module and callspec is not None:
            selected.add(callspec.params.get("name"))
    pool = ThreadPoolExecutor(max_workers=2)
    request.addfinalizer(pool.shutdown)
    folders = {name: tmp_path_factory.mktemp("run") for name in CASES if name in selected}
    return {
        name: Run(pool.submit(_run, CASES[name], folder), folder)
        for name, folder in folders.items()
    }


def _last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("name", list(ONE_LINE))
def test_a_bad_command_line_gives_one_line(runs, name):
    case = ONE_LINE[name]
    result = runs[name].process.result()
    last_line = _last_line(result.stderr)
    assert result.returncode == case.exit_code, result.stderr[-3000:]
    assert last_line.startswith("Error: ") and case.message in last_line, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (runs[name].folder / "tensorboard").exists()  # no training started


@pytest.mark.parametrize("name", list(FULL_TRACE))
def test_the_full_trace_on_request_or_for_unexpected_errors(runs, name):
    result = runs[name].process.result()
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert FULL_TRACE[name].message in result.stderr


# -- the same checks in-process: every kind of message, and what gets through -------------

COMMAND_LINES = {
    ("-m", "loss=focal,focl"): "loss: no config named 'focl'. Did you mean 'focal'?",
    ("-m", "loss=cross_entropy,focal", "loss.gamma=2"): (
        "loss: unknown option 'gamma' for lossplug.losses.CrossEntropyLoss"
    ),
    ("loss=focal,dice",): "loss=focal,dice is a sweep: add -m to run one job per value",
    ("foo=1",): "the config has no key 'foo'.",
    ("los=focal",): "the config has no key 'los'. Did you mean 'loss'?",
    ("experiment=segmentation", "loss=dice_ce_terms", "loss.terms.dcie.mode=binary"): (
        "loss.terms has no key 'dcie'. Did you mean 'dice'? Its keys: dice, ce"
    ),
    ("experiment=segmentation", "loss=dice", "loss.mode=foo"): (
        "loss: option 'mode' takes one of binary, multiclass, multilabel, auto, got 'foo'"
    ),
    ("trainer.precision=bf16mixed",): "got 'bf16mixed'; did you mean bf16-mixed?",
    ("test=maybe",): "test takes true or false, got 'maybe'; e.g. test=true",
    ("experiment=segmentation", "loss=dice_ce_terms", "loss.weights.dice=abc"): (
        "loss.weights.dice takes a number, got 'abc'; e.g. loss.weights.dice=1.0"
    ),
    ("data.batch_size=2.5",): "data: option 'batch_size' takes an integer, got 2.5",
    ("+loss.gama=3",): "loss: unknown option 'gama' for lossplug.losses.CrossEntropyLoss",
    ("loss=focal", "loss.gamma=${oops}"): (
        "loss.gamma=${oops}: Interpolation key 'oops' not found"
    ),
    ("~loss.gama",): "Could not delete from config. 'loss.gama' does not exist.",
    ("+loss.label_smoothing=0.1",): (
        "loss.label_smoothing is already in the config: drop the '+' to change it "
        "(loss.label_smoothing=0.1), or write ++loss.label_smoothing=0.1"
    ),
}


@pytest.mark.parametrize(
    ("args", "message"), COMMAND_LINES.items(), ids=[" ".join(args) for args in COMMAND_LINES]
)
def test_check_command_line_names_the_problem_and_the_fix(args, message):
    with pytest.raises(ConfigError) as error:
        check_command_line(args, DEMO_CONF)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_an_unparsable_override_is_a_usage_error():
    with pytest.raises(OverrideSyntaxError, match="cannot read the override 'loss'"):
        check_command_line(["loss"], DEMO_CONF)


@pytest.mark.parametrize(
    "args",
    [
        (
            *("loss=focal", "loss.gamma=3", "optimizer.lr=0.01", "trainer.precision=bf16-mixed"),
            *("trainer.devices=auto", "+trainer.limit_train_batches=0.5", "seed=3"),
            "hydra.run.dir=/tmp/anywhere",
        ),
        ("-m", "loss=cross_entropy,focal", "optimizer=adam,sgd", "optimizer.lr=0.1,0.01"),
        (
            "experiment=segmentation",
            "loss=dice_ce_terms",
            "loss.terms.dice.include_background=false",
        ),
        ("optimizer.lr_mult={backbone:0.1}", "scheduler=cosine", "scheduler.interval=epoch"),
        ("++loss.label_smoothing=0.1", "+trainer.num_sanity_val_steps=0", "seed=${test}"),
        ("--help",),
    ],
    ids=["options", "sweep", "term option", "lossplug options", "plus", "help"],
)
def test_good_command_lines_pass(args):
    check_command_line(args, DEMO_CONF)


def _raised(call):
    try:
        call()
    except Exception as error:
        return error
    raise AssertionError("no error raised")


def test_lossplug_errors_and_refused_arguments_are_user_errors():
    assert user_error(_raised(lambda: FocalLoss(gamma=-1))) == (
        "focal: option 'gamma' must be a finite number >= 0.0, got -1"
    )
    refused = {"optimizer": {"_target_": "torch.optim.SGD", "params": [], "lr": -1.0}}
    assert user_error(_raised(lambda: instantiate(refused))) == (
        "optimizer: Invalid learning rate: -1.0"
    )
    interpolation = OmegaConf.create({"loss": {"gamma": "${nowhere}"}})
    assert user_error(_raised(lambda: interpolation.loss.gamma)) == (
        "loss.gamma: Interpolation key 'nowhere' not found"
    )


def test_other_errors_are_not_user_errors():
    assert user_error(_raised(lambda: torch.zeros(2) + torch.zeros(3))) is None
    # a deliberate error, but torch's own, outside any config target: a trace shows where
    assert user_error(_raised(lambda: DataLoader([1], batch_size=0))) is None
    assert user_error(_raised(lambda: {}["key"])) is None


def test_one_line_errors_prints_the_message_and_exits(capsys):
    with pytest.raises(SystemExit) as stop, one_line_errors():
        FocalLoss(gamma=-1)
    assert stop.value.code == 1
    assert capsys.readouterr().err == (
        "Error: focal: option 'gamma' must be a finite number >= 0.0, got -1\n"
    )
    with pytest.raises(SystemExit) as stop, one_line_errors():
        check_command_line(["loss.gamma==3"], DEMO_CONF)
    assert stop.value.code == 2


def test_one_line_errors_lets_bugs_and_full_error_requests_through(monkeypatch):
    with pytest.raises(RuntimeError), one_line_errors():
        torch.zeros(2) + torch.zeros(3)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match="'gamma'"), one_line_errors():
        FocalLoss(gamma=-1)
