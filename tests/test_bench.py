"""The benchmark scripts run end to end, and the loss benchmark refuses rows that disagree.

Timings are not asserted (the machine is shared); what is checked is that every row's
agreement check passed and that the measurements were written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_python

sys.path.insert(0, str(REPO / "scripts"))

import bench_losses
from _benchkit import paired_ratio, paired_ratio_quartiles, peak_memory, time_steps


def test_bench_losses_quick_runs_and_every_row_agrees(tmp_path: Path):
    result = run_python(
        "scripts/bench_losses.py", "--quick", "--out", tmp_path, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "profiler_start" not in result.stdout + result.stderr  # the profiler's C++ chatter
    payload = json.loads((tmp_path / "bench_losses.json").read_text())
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
    markdown = (tmp_path / "bench_losses.md").read_text()
    assert "| loss |" in markdown and "MONAI DiceLoss" in markdown


def test_bench_scaling_quick_runs(tmp_path: Path):
    result = run_python(
        "scripts/bench_scaling.py", "--quick", "--out", tmp_path, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_scaling.json").read_text())["rows"]
    assert {row["loss"] for row in rows} == {"dice", "focal", "cross_entropy"}
    assert {row["varied"] for row in rows} == {"batch", "classes", "side"}
    assert all(row["ns_per_element"] > 0 for row in rows)


def test_bench_ce_threshold_quick_runs(tmp_path: Path):
    result = run_python(
        "scripts/bench_ce_threshold.py", "--quick", "--out", tmp_path, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_ce_threshold.json").read_text())["rows"]
    assert [row["shape"] for row in rows] == ["4x5", "2x3x4x4"]
    assert all(row["torch_s"] > 0 and row["in_place_s"] > 0 for row in rows)
    assert "default threshold is 131072" in (tmp_path / "bench_ce_threshold.md").read_text()


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
    assert peers == {"torch", "MONAI", "kornia", "PML"}


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
