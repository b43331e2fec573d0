"""The benchmark scripts run end to end, and the loss benchmark refuses rows that disagree.

Timings are not asserted (the machine is shared); what is checked is that every row's
agreement check passed and that the measurements were written, and that the documentation's
table and plot are written from the loss benchmark's JSON output.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_python
from markdown_tables import markdown_rows

from benchmarks import bench_losses, performance_page
from benchmarks.benchkit import paired_ratio, paired_ratio_quartiles, peak_memory, time_steps
from lossplug.kernels import THRESHOLDS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_losses(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The output folder of one ``--quick`` run of the loss benchmark, and the run itself."""
    out = tmp_path_factory.mktemp("bench_losses")
    result = run_python(
        "-m", "benchmarks.bench_losses", "--quick", "--out", out, cwd=REPO, timeout=300
    )
    return out, result


def test_bench_losses_quick_runs_and_every_row_agrees(quick_losses):
    out, result = quick_losses
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "profiler_start" not in result.stdout + result.stderr  # the profiler's C++ chatter
    payload = json.loads((out / "bench_losses.json").read_text())
    rows = payload["rows"]
    expected = {row.loss for row in bench_losses.all_rows(bench_losses.QUICK)}
    assert {row["loss"] for row in rows} == expected
    assert all(row["agreement"] == "ok" for row in rows), [
        (row["loss"], row["peer"], row["agreement"]) for row in rows if row["agreement"] != "ok"
    ]
    for row in rows:
        assert row["ours_s"] > 0 and row["peer_s"] > 0 and row["time_ratio"] > 0
        first, third = row["time_ratio_quartiles"]
        assert first <= row["time_ratio"] <= third
        assert row["ours_bytes"] >= 0 and row["peer_bytes"] >= 0
    assert payload["machine"]["cpu"] and payload["settings"]["quick"] is True
    markdown = (out / "bench_losses.md").read_text()
    assert markdown_rows(markdown)[0][:3] == ["loss", "size", "peer"]
    assert "MONAI DiceLoss" in markdown
    assert str(performance_page.DOCS) not in result.stdout  # a quick run leaves the docs alone


def test_the_performance_page_is_the_benchmark_table_of_its_json(quick_losses, tmp_path: Path):
    out, _ = quick_losses
    source = out / "bench_losses.json"
    payload = json.loads(source.read_text())
    command = ("-m", "benchmarks.performance_page", source, "--out", tmp_path)
    result = run_python(*command, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / performance_page.TABLE_FILE).read_text()
    plot = tmp_path / performance_page.PLOT_FILE

    # the table: one row per JSON row, the same table as the benchmark's own Markdown file
    header, *rows = markdown_rows(page)
    assert header == list(performance_page.HEADER)
    assert len(rows) == len(payload["rows"])
    for row, result in zip(rows, payload["rows"], strict=True):
        assert row[:3] == [result["loss"], result["size"], result["peer"]]
        assert float(row[3]) == pytest.approx(result["ours_s"] * 1e3, abs=5e-4)
        assert float(row[4]) == pytest.approx(result["peer_s"] * 1e3, abs=5e-4)
        assert float(row[5].split()[0]) == pytest.approx(result["time_ratio"], abs=5e-3)
        assert float(row[9]) == pytest.approx(result["memory_ratio"], abs=5e-3)
    assert markdown_rows(page) == markdown_rows((out / "bench_losses.md").read_text())

    # how, when and where it was measured
    machine = payload["machine"]
    assert f"python -m benchmarks.performance_page {source.as_posix()}" in page
    assert re.search(r"Written by .* on \d{4}-\d{2}-\d{2}\.", page)
    assert f"Run of {payload['date']}." in page
    for version in (machine["cpu"], machine["torch"], machine["monai"], machine["kornia"]):
        assert version in page
    assert f"]({performance_page.PLOT_LINK})" in page

    # the plot: a PNG whose bars are the rows' time and memory ratios
    assert plot.read_bytes().startswith(PNG_MAGIC) and plot.stat().st_size > 10_000
    time_axes, memory_axes = performance_page.ratio_figure(payload).axes
    for axes, key in ((time_axes, "time_ratio"), (memory_axes, "memory_ratio")):
        widths = [bar.get_width() for bar in axes.patches]
        assert widths == pytest.approx([result[key] for result in payload["rows"]])
    labels = [label.get_text() for label in time_axes.get_yticklabels()]
    assert labels == [f"{r['loss']} {r['size']} · {r['peer']}" for r in payload["rows"]]


def test_bench_scaling_quick_runs(tmp_path: Path):
    result = run_python(
        "-m", "benchmarks.bench_scaling", "--quick", "--out", tmp_path, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_scaling.json").read_text())["rows"]
    assert {row["loss"] for row in rows} == {"dice", "focal", "cross_entropy"}
    assert {row["varied"] for row in rows} == {"batch", "classes", "side"}
    assert all(row["ns_per_element"] > 0 for row in rows)


def test_bench_normalize_quick_runs_on_two_processes(tmp_path: Path):
    result = run_python(
        "-m", "benchmarks.bench_normalize", "--quick", "--out", tmp_path, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_normalize.json").read_text())["rows"]
    assert [row["loss"] for row in rows] == ["cross_entropy", "contrastive"]
    for row in rows:
        assert row["batch ms / step"] > 0 and row["global ms / step"] > 0
        assert row["global / batch"] > 0


def test_bench_weighting_quick_times_each_weighting_against_fixed(tmp_path: Path):
    result = run_python(
        "-m", "benchmarks.bench_weighting", "--quick", "--out", tmp_path, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_weighting.json").read_text())["rows"]
    assert [(row["encoder"], row["weighting"]) for row in rows] == [
        (encoder, weighting)
        for encoder in ("small (64-256-64)", "deep (64-1024x3-64)")
        for weighting in ("famo", "aligned_mtl")
    ]
    for row in rows:
        assert row["fixed ms / step"] > 0 and row["ms / step"] > 0
        assert row["ratio"] == pytest.approx(row["ms / step"] / row["fixed ms / step"], rel=0.5)


def test_bench_kernels_quick_times_every_kernel_against_its_plain_version(tmp_path: Path):
    result = run_python(
        "-m", "benchmarks.bench_kernels", "--quick", "--out", tmp_path, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_kernels.json").read_text())["rows"]
    assert {row["kernel"] for row in rows} == set(THRESHOLDS)
    assert all(row["kernel_ms"] > 0 and row["plain_ms"] > 0 for row in rows)
    assert all(row["kernel_bytes"] > 0 and row["plain_bytes"] > 0 for row in rows)


def test_a_disagreeing_row_is_reported_and_not_timed():
    # a peer at other options (MSE against L1) must be caught before any timing
    row = bench_losses.Row(
        "mse",
        "4x5",
        "torch nn.L1Loss",
        bench_losses.regression_inputs((4, 5)),
        bench_losses.lossplug.build_loss("mse"),
        torch.nn.L1Loss(),
        bench_losses.WRAPPER_TARGET,
    )
    args = bench_losses.parse_args(["--quick"])
    result = bench_losses.measure(row, args, torch.device("cpu"))
    assert result["agreement"].startswith("values differ")
    assert "ours_s" not in result


def test_a_gradient_disagreement_is_caught():
    # same value, different gradient: a detached term changes nothing but the gradient
    def half_detached(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mse = torch.nn.functional.mse_loss
        return 0.5 * mse(pred, target) + 0.5 * mse(pred.detach(), target)

    row = bench_losses.Row(
        "mse",
        "4x5",
        "torch nn.MSELoss",
        bench_losses.regression_inputs((4, 5)),
        half_detached,
        torch.nn.MSELoss(),
        bench_losses.WRAPPER_TARGET,
    )
    problem = bench_losses.disagreement(row, row.inputs(torch.device("cpu")))
    assert problem is not None and problem.startswith("gradients differ")


def test_peak_memory_counts_tensor_allocations():
    # 1M float32 = 4 MB: x * 2 and its relu are held together (8 MB); at most three such
    # buffers (with the gradients) ever are
    x = torch.randn(1000, 1000, requires_grad=True)

    def step() -> None:
        (x * 2).relu().sum().backward()
        x.grad = None

    peak = peak_memory(step, torch.device("cpu"))
    assert 2 * 4_000_000 <= peak <= 3 * 4_000_000 + 1024


@pytest.mark.parametrize("quick", [True, False])
def test_sizes_are_the_ones_users_train_at(quick):
    sizes = bench_losses.QUICK if quick else bench_losses.FULL
    if not quick:
        assert sizes.classification == (256, 1000)
        assert sizes.segmentation == ((8, 4, 128, 128), (2, 21, 256, 256))
        assert sizes.embeddings == (256, 128, 16)
    rows = bench_losses.all_rows(sizes)
    peers = {row.peer.split()[0] for row in rows}
    assert peers == {"torch", "MONAI", "kornia", "PML", "timm"}
    # timm is not installed (it pins another torch): its row runs timm's formula, and says so
    assert all(row.peer.endswith("(formula)") for row in rows if row.peer.startswith("timm"))


@pytest.mark.parametrize(("budget_s", "expected"), [(float("inf"), 7), (0.0, 5)])
def test_time_steps_takes_every_sample_without_a_budget(budget_s, expected):
    """Without a budget every repeat is taken; a spent budget still leaves 5 samples each."""
    calls = {"a": 0, "b": 0}

    def counting(name):
        def step():
            calls[name] += 1

        return step

    samples = time_steps(
        {name: counting(name) for name in calls},
        torch.device("cpu"),
        repeats=7,
        warmup=0,
        min_sample_s=0.0,
        budget_s=budget_s,
    )
    assert [len(samples[name]) for name in calls] == [expected, expected]
    assert all(seconds > 0 for values in samples.values() for seconds in values)


def test_paired_ratios_pair_samples_by_round_and_give_their_quartiles():
    # side-by-side ratios 2, 1, 4, 3, 5: a slow drift shared by both sides cancels
    ours = [2.0, 10.0, 40.0, 3.0, 500.0]
    peer = [1.0, 10.0, 10.0, 1.0, 100.0]
    assert paired_ratio(ours, peer) == 3.0
    assert paired_ratio_quartiles(ours, peer) == (2.0, 3.0, 4.0)
    assert paired_ratio_quartiles([3.0], [2.0]) == (1.5, 1.5, 1.5)  # one sample (--quick)


def test_compare_revisions_measures_a_base_revision_from_its_own_files(tmp_path: Path):
    base = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    command = ["-m", "benchmarks.compare_revisions", "--base", base, "--rounds", "1"]
    command += ["--quick", "--losses", "mse", "huber", "--out", tmp_path]
    result = run_python(*command, cwd=REPO, timeout=300)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads((tmp_path / "compare_revisions.json").read_text())
    assert payload["base"] == base
    assert {row["loss"] for row in payload["rows"]} == {"mse", "huber"}
    for row in payload["rows"]:
        for kind in ("time", "memory"):
            assert row["change"][kind] == pytest.approx(row["new"][kind] / row["base"][kind])
        assert row["worse"] is (max(row["change"].values()) > 1.05)
    assert (result.returncode == 1) is any(row["worse"] for row in payload["rows"])
