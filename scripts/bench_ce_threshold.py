"""Where cross-entropy's in-place backward pass starts to pay: its time against torch's path.

``lossplug.functional.cross_entropy`` takes the backward pass of
``lossplug/functional/_index_cross_entropy.py`` from ``IN_PLACE_MIN_ELEMENTS`` logits on (the
CPU, eager mode). For logits around that threshold this script times the same public call on
both paths, forward + backward and sampled in turn (see ``_benchkit``), by setting the
threshold to 0 (always in place) or beyond any size (always torch's kernels); a ratio below 1
means the in-place pass is faster at that size.

    python scripts/bench_ce_threshold.py --threads 1   # bench_results/bench_ce_threshold.*
    python scripts/bench_ce_threshold.py --quick       # tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable

import torch
from _benchkit import (
    forward_backward,
    machine_info,
    markdown_table,
    paired_ratio_quartiles,
    sampling_parser,
    text_table,
    time_parsed_steps,
    write_results,
)
from torch import Tensor

from lossplug.functional import classification

SHAPES = [(256, 128), (256, 256), (256, 384), (128, 1000), (256, 1000)]
SHAPES += [(4, 4, 64, 64), (2, 4, 128, 128), (8, 4, 128, 128)]
QUICK_SHAPES = [(4, 5), (2, 3, 4, 4)]
PATHS = ("torch", "in_place")


def cross_entropy_on(path: str) -> Callable[[Tensor, Tensor], Tensor]:
    """``cross_entropy`` always on the in-place path or always on torch's kernels."""
    threshold = 0 if path == "in_place" else math.inf

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        classification.IN_PLACE_MIN_ELEMENTS = threshold
        return classification.cross_entropy(logits, target)

    return loss


def measure(shape: tuple[int, ...], args: argparse.Namespace) -> dict[str, object]:
    """Time both paths on logits of ``shape`` and class indices."""
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(shape, generator=gen) * 2).requires_grad_()
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    steps = {path: forward_backward(cross_entropy_on(path), (logits, target)) for path in PATHS}
    samples = time_parsed_steps(steps, args)
    first, median, third = paired_ratio_quartiles(samples["in_place"], samples["torch"])
    return {
        "shape": "x".join(map(str, shape)),
        "logits": logits.numel(),
        "torch_s": statistics.median(samples["torch"]),
        "in_place_s": statistics.median(samples["in_place"]),
        "time_ratio": median,
        "time_ratio_quartiles": [first, third],
    }


def main(argv: list[str] | None = None) -> int:
    parser = sampling_parser(__doc__.split("\n\n")[0], repeats=101, warmup=10, min_sample_s=0.005)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.warmup, args.min_sample_s = 1, 1, 0.0
    threshold = classification.IN_PLACE_MIN_ELEMENTS
    try:
        rows = [measure(shape, args) for shape in (QUICK_SHAPES if args.quick else SHAPES)]
    finally:
        classification.IN_PLACE_MIN_ELEMENTS = threshold
    header = ("logits", "elements", "torch path ms", "in-place ms", "ratio", "quartiles")
    body = [
        [
            row["shape"],
            row["logits"],
            f"{row['torch_s'] * 1e3:.3f}",
            f"{row['in_place_s'] * 1e3:.3f}",
            f"{row['time_ratio']:.2f}",
            "-".join(f"{q:.2f}" for q in row["time_ratio_quartiles"]),
        ]
        for row in rows
    ]
    info = machine_info(torch.device("cpu"))
    print(text_table(header, body))
    title = (
        "cross_entropy forward + backward, in-place backward pass against torch's kernels "
        f"(ratio = in-place / torch; the default threshold is {threshold} logits). "
        f"{info['cpu']}, {info['threads']} threads, torch {info['torch']}."
    )
    payload = {"machine": info, "settings": vars(args) | {"out": str(args.out)}, "rows": rows}
    write_results(
        args.out, "bench_ce_threshold", payload, title + "\n\n" + markdown_table(header, body)
    )
    print(
        f"\nwritten: {args.out / 'bench_ce_threshold.json'}, {args.out / 'bench_ce_threshold.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
