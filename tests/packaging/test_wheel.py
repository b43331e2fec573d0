"""lossplug installed as users install it: the built wheel in a fresh virtual environment.

``make dist`` builds an sdist and a wheel (the wheel from the sdist) and checks both with
twine; here the same commands run, then the wheel (not editable) goes into a new virtual
environment with the pinned torch, and the own-project example and a Hydra app of a user's
run there, away from the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO
from user_app import APP, CONFIG

pytestmark = pytest.mark.slow


def _run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a command as a user would: without the repository on ``PYTHONPATH``."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = [str(arg) for arg in args]
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a fresh virtual environment holding torch and lossplug's wheel."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, REPO, cwd=root)
    (wheel,) = dist.glob("lossplug-*.whl")
    (sdist,) = dist.glob("lossplug-*.tar.gz")
    twine = _venv(root / "twine", "twine")  # apart, as in the Makefile: twine brings rich
    _run(twine.parent / "twine", "check", "--strict", wheel, sdist, cwd=root)
    # torch first: the local CPU build, as the Makefile does
    return _venv(root / "venv", "torch==2.13.0", f"{wheel}[examples]")


def _venv(folder: Path, *installs: str) -> Path:
    """A new virtual environment with ``installs`` in turn, pinned; its Python."""
    _run(sys.executable, "-m", "venv", folder, cwd=folder.parent)
    python = folder / "bin" / "python"
    pip = (python, "-m", "pip", "install", "--quiet", "--constraint", REPO / "constraints.txt")
    for requirement in installs:
        _run(*pip, requirement, cwd=folder.parent)
    return python


def test_the_wheel_holds_the_library_and_its_config_groups_only(installed):
    listing = _run(installed, "-m", "pip", "show", "--files", "lossplug", cwd=installed.parent)
    files = [line.strip() for line in listing.stdout.splitlines() if line.startswith("  ")]
    assert "lossplug/conf/loss/focal.yaml" in files
    assert "hydra_plugins/lossplug_searchpath/lossplug_searchpath.py" in files
    outside = ("tests/", "conf/", "benchmarks/", "scripts/", "examples/")
    assert not any(file.startswith(outside) for file in files)


def test_the_readmes_own_project_example_runs_as_printed(installed, tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("### The mixin in your own Lightning project", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme_example.py").write_text(block)
    result = _run(installed, "readme_example.py", cwd=tmp_path)
    assert "`Trainer.fit` stopped: `max_epochs=5` reached." in result.stdout + result.stderr


def test_the_own_project_example_runs_in_the_fresh_environment(installed, tmp_path):
    shutil.copy(REPO / "examples" / "own_project.py", tmp_path)
    result = _run(installed, "own_project.py", cwd=tmp_path)
    metrics = eval(result.stdout.strip().splitlines()[-1])  # the example prints a dict
    assert metrics["val/acc"] > 0.9


def test_a_users_hydra_app_finds_the_installed_groups(installed, tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(textwrap.dedent(CONFIG))
    (tmp_path / "app.py").write_text(APP)
    result = _run(installed, "app.py", "loss.gamma=3", "hydra.run.dir=out", cwd=tmp_path)
    report = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    assert '"loss": "FocalLoss"' in report and '"mode": "multiclass"' in report
    assert '"scheduler": "CosineAnnealingLR"' in report
    assert str(installed.parents[1] / "lib") in report  # lossplug from the venv, not the clone
