"""How lossplug's time grows with batch size, number of classes and image size.

For Dice, multiclass focal and cross-entropy, three sweeps each vary one of batch ``N``,
classes ``C`` and image side ``H = W`` from a base of ``N=4, C=4, 128x128``. The sizes of a
sweep are timed in turn (forward + backward, medians; see :mod:`benchmarks.benchkit`), and the
time per element of the logits ``N*C*H*W`` is reported, with the marginal time per element added
between neighbouring sizes: constant marginal time is linear scaling (small sizes also pay a
fixed per-call cost, the Python and small-tensor work of one call).

    python -m benchmarks.bench_scaling          # writes bench_results/bench_scaling.{json,md}
    python -m benchmarks.bench_scaling --quick  # tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import torch
from torch import Tensor

import lossplug
from benchmarks.benchkit import (
    forward_backward,
    machine_info,
    sampling_parser,
    time_parsed_steps,
    write_results,
)

LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "dice": lossplug.build_loss("dice"),
    "focal": lossplug.build_loss("focal", mode="multiclass", gamma=2.0),
    "cross_entropy": lossplug.build_loss("cross_entropy"),
}
BASE = {"batch": 4, "classes": 4, "side": 128}
SWEEPS = {"batch": (1, 2, 4, 8, 16), "classes": (2, 4, 8, 16, 32), "side": (32, 64, 128, 256)}
QUICK_BASE = {"batch": 2, "classes": 3, "side": 8}
QUICK_SWEEPS = {"batch": (1, 2), "classes": (2, 3), "side": (4, 8)}


def inputs(batch: int, classes: int, side: int) -> tuple[Tensor, Tensor]:
    """Logits ``(N, C, H, W)`` requiring grad and class indices ``(N, H, W)``."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, classes, side, side, generator=gen).requires_grad_()
    return logits, torch.randint(0, classes, (batch, side, side), generator=gen)


def sweep(
    loss: Callable[[Tensor, Tensor], Tensor],
    varied: str,
    values: tuple[int, ...],
    base: dict[str, int],
    args: argparse.Namespace,
) -> list[dict[str, object]]:
    """Time one loss over the values of one size, the others at ``base``."""
    sizes = [{**base, varied: value} for value in values]
    steps = {index: forward_backward(loss, inputs(**size)) for index, size in enumerate(sizes)}
    samples = time_parsed_steps(steps, args, budget_s=args.budget_s)
    rows = []
    for index, size in enumerate(sizes):
        seconds = statistics.median(samples[index])
        elements = size["batch"] * size["classes"] * size["side"] ** 2
        rows.append(
            {
                **size,
                "varied": varied,
                "seconds": seconds,
                "ns_per_element": seconds / elements * 1e9,
            }
        )
    previous = None
    for row in rows:
        elements = row["batch"] * row["classes"] * row["side"] ** 2
        if previous is not None:  # the cost of each element added since the previous size
            added = elements - previous[0]
            row["marginal_ns_per_element"] = (row["seconds"] - previous[1]) / added * 1e9
        previous = (elements, row["seconds"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = sampling_parser(__doc__.split("\n\n")[0], repeats=15, warmup=2, min_sample_s=0.002)
    parser.add_argument("--budget-s", type=float, default=10.0, help="time limit per sweep, s")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base, sweeps = (QUICK_BASE, QUICK_SWEEPS) if args.quick else (BASE, SWEEPS)
    if args.quick:
        args.repeats, args.warmup = 1, 1
    results = []
    for name, loss in LOSSES.items():
        for varied, values in sweeps.items():
            for row in sweep(loss, varied, values, base, args):
                results.append({"loss": name, **row})
                print(
                    f"{name:<14} {_shape(row):<18} {row['ns_per_element']:8.2f} ns/element",
                    flush=True,
                )
    header = ("loss", "varied", "N x C x H x W", "ms", "ns / element", "marginal ns / element")
    body = [
        [
            row["loss"],
            row["varied"],
            _shape(row),
            f"{row['seconds'] * 1e3:.3f}",
            f"{row['ns_per_element']:.2f}",
            f"{row['marginal_ns_per_element']:.2f}" if "marginal_ns_per_element" in row else "",
        ]
        for row in results
    ]
    info = machine_info(torch.device("cpu"))
    title = (
        "Forward + backward time per logit element; marginal = the time added per element "
        "added since the previous size of the sweep (constant for linear scaling; the first "
        f"sizes also pay a fixed per-call cost). {info['cpu']}, {info['threads']} threads, "
        f"torch {info['torch']}."
    )
    payload = {"machine": info, "settings": vars(args) | {"out": str(args.out)}, "rows": results}
    write_results(args.out, "bench_scaling", payload, title, header, body)
    return 0


def _shape(row: dict[str, object]) -> str:
    return f"{row['batch']}x{row['classes']}x{row['side']}x{row['side']}"


if __name__ == "__main__":
    sys.exit(main())
