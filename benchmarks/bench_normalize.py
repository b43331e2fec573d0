"""What ``normalize_loss="global"`` costs per optimizer step, on 2 processes over gloo.

The default experiment's model (the digits MLP: 64 -> 256 -> 10) trains with micro-batches of
64, 4 micro-batches per optimizer step, SGD, wrapped in ``DistributedDataParallel`` on 2 CPU
processes, with two losses:

- ``cross_entropy``, a quarter of the targets ignored: one count group, so ``global`` adds one
  scalar ``all_reduce`` of the count and one multiply per gradient per step;
- ``contrastive`` on the 10 outputs as embeddings, 10 classes: ``pos`` and ``neg`` are counted
  over different pairs, two count groups, so ``global`` adds one backward pass per
  micro-batch (``torch.autograd.grad`` of the ``pos`` sum), an ``all_reduce`` of two counts
  and one of a gradient-sized buffer per step.

Each runs once as every trainer does (each micro-batch backpropagates its mean), once as
:class:`~lossplug.normalize.GlobalNormalizer` does it. The two alternate (ABAB) on the same
data; a ratio is global / batch, the median over rounds of the two modes' median step times.

    python -m benchmarks.bench_normalize          # bench_results/, docs/performance/normalize.md
    python -m benchmarks.bench_normalize --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from benchmarks.benchkit import machine_info, write_results
from benchmarks.performance_page import write_fragment
from lossplug.losses import ContrastiveLoss, CrossEntropyLoss, LossModule
from lossplug.normalize import GlobalNormalizer

ACCUMULATE, BATCH, IGNORE, CLASSES = 4, 64, -100, 10
LOSSES = {
    "cross_entropy": lambda: CrossEntropyLoss(ignore_index=IGNORE),
    "contrastive": ContrastiveLoss,
}


def timed_steps(
    net: DistributedDataParallel, criterion: LossModule, mode: str, steps: int
) -> list[float]:
    """Seconds per optimizer step of ``steps`` steps in ``mode`` (``batch`` or ``global``)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    normalizer = GlobalNormalizer(mode)
    generator = torch.Generator().manual_seed(dist.get_rank())
    times = []
    for _ in range(steps):
        batches = []
        for _ in range(ACCUMULATE):
            x = torch.randn(BATCH, 64, generator=generator)
            y = torch.randint(0, CLASSES, (BATCH,), generator=generator)
            if isinstance(criterion, CrossEntropyLoss):
                y[: BATCH // 4] = IGNORE
            batches.append((x, y))
        start = time.perf_counter()
        for index, (x, y) in enumerate(batches):
            last = index == ACCUMULATE - 1
            with nullcontext() if last else net.no_sync():
                loss = micro_batch_loss(net, criterion, normalizer, x, y)
                (loss / ACCUMULATE).backward()
        normalizer.rescale(net.parameters(), ACCUMULATE, dist.get_world_size())
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times


def micro_batch_loss(
    net: nn.Module, criterion: LossModule, normalizer: GlobalNormalizer, x: Tensor, y: Tensor
) -> Tensor:
    """What a micro-batch backpropagates, as the mixin's ``compute_loss`` forms it."""
    components, counts = criterion.measured_components(net(x), y)
    total = criterion.total(components)
    if not normalizer.on:
        return total
    return normalizer.batch_sum(criterion, total, components, counts, net.parameters())


def worker(rank: int, port: int, rounds: int, steps: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    net = DistributedDataParallel(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)))
    medians: dict[str, list[float]] = {}
    for loss, build in LOSSES.items():
        criterion = build()
        timed_steps(net, criterion, "batch", steps)  # warm-up
        for _ in range(rounds):
            for mode in ("batch", "global"):
                times = timed_steps(net, criterion, mode, steps)
                medians.setdefault(f"{loss}:{mode}", []).append(statistics.median(times))
    if rank == 0:
        results.update(medians)
    dist.barrier()  # neither rank tears gloo down while the other still uses it
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    rounds, steps = (1, 5) if args.quick else (7, 100)
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(free_port(), rounds, steps, results), nprocs=2)
        medians = dict(results)
    header = ["loss", "batch ms / step", "global ms / step", "global / batch"]
    rows = []
    for loss in LOSSES:
        batch, normalized = medians[f"{loss}:batch"], medians[f"{loss}:global"]
        ratios = [g / b for g, b in zip(normalized, batch, strict=True)]
        rows.append(
            [
                loss,
                round(1e3 * statistics.median(batch), 3),
                round(1e3 * statistics.median(normalized), 3),
                round(statistics.median(ratios), 3),
            ]
        )
    payload = {
        "machine": machine_info(torch.device("cpu")),
        "settings": {"rounds": rounds, "steps": steps, "accumulate": ACCUMULATE, "batch": BATCH},
        "rows": [dict(zip(header, row, strict=True)) for row in rows],
    }
    title = (
        "normalize_loss: global against batch, per optimizer step of 4 micro-batches of 64, "
        "2 processes over gloo, 1 torch thread each"
    )
    write_results(args.out, "bench_normalize", payload, title, header, rows)
    if not args.quick:
        write_fragment("normalize", title, payload["machine"], header, rows)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
