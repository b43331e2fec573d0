"""The run report on a real sweep: one row per run with the last logged values, a PNG.

Most tests run ``scripts/tb_report.py``; one checks that ``python -m lossplug.report`` is the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, run_python
from markdown_tables import markdown_rows
from tiny_runs import SWEEP_LOSSES, TINY, last_scalars, tiny_sweep

from lossplug.report.runs import Run

REPORT = REPO / "scripts" / "tb_report.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sweep(tmp_path_factory)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1024


def test_one_row_per_run_holds_the_last_logged_value_of_every_tag(sweep, tmp_path):
    plot = tmp_path / "report.png"
    result = run_python(REPORT, sweep, "--out", plot, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    header, *rows = markdown_rows(result.stdout)
    assert header[0] == "run"
    tags = header[1:]
    assert {"val/loss", "val/acc"} | {f"val/loss/{loss}" for loss in SWEEP_LOSSES} <= set(tags)
    assert any(tag.startswith("train/loss") for tag in tags)
    assert not [tag for tag in tags if tag.startswith("lr-") or tag == "epoch"]
    # the sweep's differing override names each row; the shared ones are printed once
    assert [row[0] for row in rows] == [
        f"{job} (loss={loss})" for job, loss in enumerate(SWEEP_LOSSES)
    ]
    assert re.search(r"Overrides of every run: .*trainer\.max_epochs=2", result.stdout)
    for job, row in enumerate(rows):
        logged = last_scalars(sweep / str(job) / "tensorboard" / "version_0")
        for tag, cell in zip(tags, row[1:], strict=True):
            if tag in logged:
                assert float(cell) == pytest.approx(logged[tag], rel=5e-4), (job, tag)
            else:
                assert cell == "-", (job, tag)
    assert rows[0][tags.index(f"val/loss/{SWEEP_LOSSES[1]}") + 1] == "-"

    assert f"Plot: {plot}" in result.stdout
    assert_png(plot)


def test_tags_select_the_columns_in_a_plain_table(sweep, tmp_path):
    plot = tmp_path / "nested" / "val.png"
    options = ("--tags", "^val/loss", "--format", "plain", "--out", plot)
    result = run_python(REPORT, sweep, *options, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("run ")))
    assert lines[header].split() == ["run", "val/loss", "val/loss/cross_entropy", "val/loss/focal"]
    assert set(lines[header + 1]) <= {"-", " "}
    assert lines[header + 2].startswith("0 (loss=cross_entropy)")
    assert lines[header + 3].startswith("1 (loss=focal)")
    assert_png(plot)


def test_a_folder_without_event_files_is_a_clear_error(tmp_path):
    (tmp_path / "empty_run" / ".hydra").mkdir(parents=True)
    result = run_python(REPORT, tmp_path, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert f"no TensorBoard event files (events.out.tfevents.*) under {tmp_path}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "report.png").exists()


def test_a_tag_pattern_matching_nothing_lists_the_logged_tags(sweep, tmp_path):
    result = run_python(REPORT, sweep, "--tags", "^nothing/", cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "no tag matches '^nothing/'; the runs logged: " in result.stderr
    assert "val/loss/focal" in result.stderr


def test_the_package_command_prints_what_the_script_prints(sweep, tmp_path):
    options = ("--tags", "^val/", "--out", tmp_path / "val.png")
    script = run_python(REPORT, sweep, *options, cwd=tmp_path, timeout=120)
    package = run_python("-m", "lossplug.report", sweep, *options, cwd=tmp_path, timeout=120)
    assert script.returncode == package.returncode == 0, package.stderr[-3000:]
    assert package.stdout == script.stdout
    assert_png(tmp_path / "val.png")


def test_the_docs_sample_is_the_tools_output_for_the_same_sweep(sweep, tmp_path):
    """docs/reports.md shows a report of the tiny sweep's command: the same columns and rows."""
    docs = (REPO / "docs" / "reports.md").read_text()
    sample = docs.split("```text\n", 1)[1].split("```", 1)[0]
    for override in TINY:
        assert override in sample.splitlines()[0]  # the sweep's command, as run here
    result = run_python(REPORT, sweep, "--out", tmp_path / "report.png", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    ours, theirs = markdown_rows(sample), markdown_rows(result.stdout)
    assert ours[0] == theirs[0]  # the columns
    assert [row[0] for row in ours[1:]] == [row[0] for row in theirs[1:]]  # the runs
    assert [row.count("-") for row in ours] == [row.count("-") for row in theirs]


def test_a_sole_component_equal_to_the_total_is_named_not_drawn_twice(sweep):
    from lossplug.report.runs import read_scalars, sole_component

    run = Run("0", (), read_scalars(sweep / "0" / "tensorboard" / "version_0"))
    assert sole_component(run, "val") == "val/loss/cross_entropy"
    assert sole_component(run, "train_step") == "train_step/loss/cross_entropy"
    run.scalars["val/loss/extra"] = run.scalars["val/loss"]  # two components: both drawn
    assert sole_component(run, "val") is None
