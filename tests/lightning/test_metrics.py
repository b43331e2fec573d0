from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lossplug.metrics import LossMetrics


def test_epoch_mean_is_exact_over_uneven_batches():
    torch.manual_seed(0)
    per_sample = torch.rand(103)  # batches of 32, 32, 32 and a last one of 7
    metric = LossMetrics(["mse"])
    for batch in per_sample.split(32):
        metric.update({"mse": batch.mean()}, weight=len(batch))
    assert metric.compute()["mse"].item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    naive = torch.stack([b.mean() for b in per_sample.split(32)]).mean()
    assert abs(naive.item() - per_sample.mean().item()) > 1e-4  # the skew an unweighted mean has


def test_missing_component_counts_with_weight_zero_and_per_component_weights():
    metric = LossMetrics(["pos", "neg"])
    metric.update({"pos": torch.tensor(1.0), "neg": torch.tensor(3.0)}, weight={"pos": 2, "neg": 6})
    metric.update({"neg": torch.tensor(1.0)}, weight={"neg": 2})
    metric.update({"pos": torch.tensor(4.0)}, weight=1)
    result = metric.compute()
    assert result["pos"].item() == pytest.approx((1 * 2 + 4 * 1) / 3)
    assert result["neg"].item() == pytest.approx((3 * 6 + 1 * 2) / 8)


def test_component_never_seen_reads_zero_not_nan():
    metric = LossMetrics(["triplet"])
    metric.update({}, weight=5)
    assert metric.compute()["triplet"].item() == 0.0


def test_bad_updates_are_named():
    metric = LossMetrics(["dice", "ce"])
    with pytest.raises(
        KeyError, match=r"components \['focal'\] are not among the names \['dice', 'ce'\]"
    ):
        metric.update({"focal": torch.tensor(1.0)})
    with pytest.raises(
        ValueError, match=r"component 'dice' must be a scalar batch mean, got shape \(3,\)"
    ):
        metric.update({"dice": torch.ones(3)})
    with pytest.raises(ValueError, match="unique and non-empty"):
        LossMetrics(["a", "a"])


def _count_collectives(counter):
    for name in (
        "all_reduce",
        "all_gather",
        "all_gather_into_tensor",
        "broadcast",
        "barrier",
        "all_gather_object",
    ):
        original = getattr(dist, name)

        def wrapped(*args, _original=original, _name=name, **kwargs):
            counter.append(_name)
            return _original(*args, **kwargs)

        setattr(dist, name, wrapped)


def _ddp_worker(rank, world_size, init_file, num_components, result_file):
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),  # a mismatch fails instead of hanging
    )
    generator = torch.Generator().manual_seed(1)
    data = torch.rand(num_components, 157, generator=generator)  # same data on both ranks
    # rank 0 sees the first 100 samples (batches 32, 32, 32, 4), rank 1 the other 57 (32, 25)
    mine = data[:, :100] if rank == 0 else data[:, 100:]
    names = [f"c{k}" for k in range(num_components)]
    metric = LossMetrics(names)
    for batch in mine.split(32, dim=1):
        metric.update({n: batch[k].mean() for k, n in enumerate(names)}, weight=batch.shape[1])
    calls: list[str] = []
    _count_collectives(calls)
    result = metric.compute()
    expected = data.mean(dim=1)
    error = max(abs(result[n].item() - expected[k].item()) for k, n in enumerate(names))
    if rank == 0:
        torch.save({"calls": calls, "error": error}, result_file)
    dist.destroy_process_group()


@pytest.mark.parametrize("num_components", [1, 16])
def test_two_process_ddp_exact_and_one_collective(num_components, tmp_path):
    init_file = tmp_path / "init"
    result_file = tmp_path / "result.pt"
    mp.start_processes(
        _ddp_worker,
        args=(2, str(init_file), num_components, str(result_file)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    result = torch.load(result_file)
    assert result["error"] < 1e-6
    assert result["calls"] == ["all_reduce"]


def test_a_cast_keeps_the_state_float64_on_the_module_s_device():
    metric = LossMetrics(["a"]).to("meta")
    metric.to(dtype=torch.float16)  # a module cast; not a move
    assert metric.totals.dtype == torch.float64 and metric.totals.device.type == "meta"
