"""lossplug inside an app laid out like lightning-hydra-template (examples/template_app).

The app nests lossplug's groups under ``model`` and instantiates the model config
recursively, so the mixin receives a built loss and ``functools.partial`` optimizer and
scheduler factories that still carry lossplug's options.
"""

from __future__ import annotations

from conftest import REPO, run_python

APP = REPO / "examples" / "template_app" / "train.py"


def _lines(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


def test_nested_groups_are_chosen_and_set_from_the_command_line(tmp_path):
    result = run_python(
        APP,
        "loss@model.loss=focal",
        "model.loss.gamma=3",
        "scheduler@model.scheduler=plateau",
        "model.scheduler.patience=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = _lines(result.stdout)
    assert printed["loss"].startswith("FocalLoss(mode='multiclass', gamma=3.0")
    # lr 0.01 with lr_mult {backbone: 0.1}: the backbone's groups at 0.001, the head's at 0.01
    rates = sorted(map(float, printed["optimizer"].rsplit(":", 1)[1].split()))
    assert printed["optimizer"].startswith("AdamW")
    assert rates[0] == 0.001 and rates[-1] == 0.01
    assert float(printed["val/loss"]) > 0


def test_a_sweep_over_the_nested_learning_rate_runs_one_job_per_value(tmp_path):
    result = run_python(
        APP,
        "-m",
        "model.optimizer.lr=0.02,0.005",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    heads = [
        max(map(float, line.rsplit(":", 1)[1].split()))
        for line in result.stdout.splitlines()
        if line.startswith("optimizer: ")
    ]
    assert heads == [0.02, 0.005]
    assert sorted(path.name for path in (tmp_path / "sweep").iterdir()) == [
        "0",
        "1",
        "multirun.yaml",
    ]


def test_a_misspelt_nested_option_gets_one_line(tmp_path):
    result = run_python(
        APP,
        "model.loss.label_smoothin=0.1",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=120,
        full_error=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: model.loss: unknown option 'label_smoothin' for "
        "lossplug.losses.CrossEntropyLoss. Did you mean 'label_smoothing'? Valid options: "
        "ignore_index, label_smoothing, reduction, weight"
    ]
