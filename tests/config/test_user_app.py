"""lossplug from a user's point of view: their own Hydra app, their own LightningModule."""

from __future__ import annotations

import json
import runpy
import shutil
import textwrap

import pytest
from conftest import REPO, run_python
from user_app import APP, CONFIG

#: runs a script with an installed copy of lossplug first on the path and the repository
#: (the editable install) off it: what ``pip install lossplug`` (not editable) gives.
FROM_INSTALLED_COPY = """
import runpy, sys
site, repo = sys.argv.pop(1), sys.argv.pop(1)
sys.path[:] = [site] + [path for path in sys.path if path.rstrip("/") != repo]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def install_copy(site):
    """Lay out lossplug as the wheel does: the two packages of pyproject's wheel target."""
    for package in ("lossplug", "hydra_plugins"):
        shutil.copytree(
            REPO / package, site / package, ignore=shutil.ignore_patterns("__pycache__")
        )


@pytest.mark.parametrize("install", ["editable", "installed copy"])
def test_packaged_config_groups_work_in_a_users_hydra_app(tmp_path, install):
    app_dir = tmp_path / "app"
    (app_dir / "conf").mkdir(parents=True)
    (app_dir / "conf" / "config.yaml").write_text(textwrap.dedent(CONFIG))
    (app_dir / "app.py").write_text(APP)
    command = ["app.py"]
    if install == "installed copy":
        install_copy(tmp_path / "site")
        command = ["-c", FROM_INSTALLED_COPY, tmp_path / "site", REPO, "app.py"]
    # focal's default mode (auto) fits the 3-class model: no loss.mode to set
    overrides = ["loss.gamma=3", "optimizer.lr=0.02", "hydra.run.dir=out"]
    result = run_python(*command, *overrides, cwd=app_dir, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    report = json.loads(line.removeprefix("RESULT "))
    assert report == {
        "loss": "FocalLoss",
        "mode": "multiclass",
        "gamma": 3.0,
        "optimizer": "AdamW",
        "initial_lr": 0.02,
        "scheduler": "CosineAnnealingLR",
        "val_loss_logged": True,
        "sources": report["sources"],
        "greeting": "hello",
        "lossplug": report["lossplug"],
    }
    expected_home = tmp_path / "site" if install == "installed copy" else REPO
    assert report["lossplug"] == str(expected_home / "lossplug" / "__init__.py")
    assert "lossplug.conf" in report["sources"]  # the search-path plugin added it
    assert [path.name for path in (app_dir / "conf").iterdir()] == ["config.yaml"]


def test_the_own_project_example_trains():
    example = runpy.run_path(str(REPO / "examples" / "own_project.py"))
    metrics = example["main"](max_epochs=5)
    assert metrics["val/acc"] > 0.9
    assert metrics["val/loss/focal"] == metrics["val/loss"]


def test_the_vae_example_adds_the_model_s_kl_to_the_loss():
    example = runpy.run_path(str(REPO / "examples" / "vae.py"))
    metrics = example["main"](max_epochs=3)
    assert metrics["val/loss/kl"] > 0
    expected = metrics["val/loss/recon"] + 0.003 * metrics["val/loss/kl"]
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5)


def test_a_users_hydra_app_sees_only_the_library_s_groups(tmp_path):
    app_dir = tmp_path / "app"
    (app_dir / "conf").mkdir(parents=True)
    (app_dir / "conf" / "config.yaml").write_text(textwrap.dedent(CONFIG))
    (app_dir / "app.py").write_text(APP)
    result = run_python("app.py", "--help", cwd=app_dir, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0].strip() for line in groups.splitlines() if ":" in line}
    assert listed == {"loss", "optimizer", "scheduler", "diagnostics"}
    assert "focal" in groups and "adamw" in groups


@pytest.mark.parametrize("main", ["hydra.main", "lossplug_main"])
def test_a_misspelt_option_in_a_users_app_gets_one_line_with_the_fix(tmp_path, main):
    """``@lossplug_main`` in place of ``@hydra.main`` gives the checks scripts/train.py has."""
    app_dir = tmp_path / "app"
    (app_dir / "conf").mkdir(parents=True)
    (app_dir / "conf" / "config.yaml").write_text(textwrap.dedent(CONFIG))
    app = APP
    if main == "lossplug_main":
        app = APP.replace("@hydra.main(", "@lossplug_main(").replace(
            "import lossplug\n", "import lossplug\nfrom lossplug.config import lossplug_main\n"
        )
    (app_dir / "app.py").write_text(app)
    result = run_python(
        "app.py", "loss.gama=3", "hydra.run.dir=out", cwd=app_dir, timeout=120, full_error=False
    )
    assert result.returncode == 1
    if main == "hydra.main":  # Hydra's own words, over several lines
        assert "Key 'gama' is not in struct" in result.stderr
        return
    assert result.stderr.strip().splitlines() == [
        "Error: loss: unknown option 'gama' for lossplug.losses.FocalLoss. Did you mean "
        "'gamma'? Valid options: alpha, gamma, ignore_index, mode, reduction"
    ]


def test_a_shape_the_loss_cannot_take_names_the_option_in_one_line(tmp_path):
    app_dir = tmp_path / "app"
    (app_dir / "conf").mkdir(parents=True)
    (app_dir / "conf" / "config.yaml").write_text(textwrap.dedent(CONFIG))
    app = APP.replace("@hydra.main(", "@lossplug_main(").replace(
        "import lossplug\n", "import lossplug\nfrom lossplug.config import lossplug_main\n"
    )
    (app_dir / "app.py").write_text(app)
    result = run_python(
        "app.py",
        "loss.mode=binary",
        "hydra.run.dir=out",
        cwd=app_dir,
        timeout=120,
        full_error=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]  # after Lightning's own INFO lines
    assert line.startswith("Error: focal: 'pred' and 'target' must have the same shape")
    assert "mode 'binary'" in line and "set the loss's mode to 'multiclass' or 'auto'" in line
