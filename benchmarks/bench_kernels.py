"""Each kernel against the plain autograd version of its loss, side by side, at benchmark sizes.

A kernel stays in :mod:`lossplug.kernels` only where it wins at least 5 % of the forward +
backward time, or of its peak memory, at the sizes of ``bench_losses``. For every row the loss
runs twice on the same inputs: once as users get it (kernels on) and once with the row's kernel
off (its threshold raised out of reach; for the whole-loss kernels that is the plain version).
Both must agree (value and gradient) before they are timed in turn and their peak memory is
measured (see :mod:`benchmarks.benchkit`).

    python -m benchmarks.bench_kernels --threads 1     # bench_results/bench_kernels.{json,md}
    python -m benchmarks.bench_kernels --quick         # tiny sizes, one repeat (smoke run)

A full run (not ``--quick``) also writes its table to ``docs/performance/kernels.md``, which
``docs/performance.md`` includes.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from benchmarks.benchkit import (
    forward_backward,
    machine_info,
    paired_ratio,
    peak_memory,
    sampling_parser,
    time_parsed_steps,
    write_results,
)
from benchmarks.performance_page import DOCS
from lossplug import functional as LF
from lossplug.kernels import THRESHOLDS
from lossplug.report.tables import markdown_table

#: The smallest win (kernel / plain, in time or in peak memory, at most this) that keeps a kernel.
KEEP_BELOW = 0.95

FULL_CLASSIFICATION = (256, 1000)
FULL_SEGMENTATION = ((8, 4, 128, 128), (2, 21, 256, 256))
QUICK_CLASSIFICATION = (8, 10)
QUICK_SEGMENTATION = ((2, 3, 8, 8),)


@dataclass(frozen=True)
class Row:
    """One kernel on one loss at one size."""

    kernel: str
    loss: str
    size: tuple[int, ...]
    fn: Callable[[Tensor, Tensor], Tensor]
    target: str = "index"  #: "index" (class indices), "binary" (0/1) or "probs" (softmax)


@contextmanager
def kernel_off(name: str) -> Iterator[None]:
    """A block in which kernel ``name`` never applies (its threshold out of reach)."""
    saved = THRESHOLDS[name]
    THRESHOLDS[name] = dataclasses.replace(saved, minimum=2**62)
    try:
        yield
    finally:
        THRESHOLDS[name] = saved


def rows(quick: bool) -> list[Row]:
    """The rows: each kernel at the sizes where ``bench_losses`` runs its loss."""
    classification = QUICK_CLASSIFICATION if quick else FULL_CLASSIFICATION
    segmentation = QUICK_SEGMENTATION if quick else FULL_SEGMENTATION
    focal = lambda mode: lambda p, t: LF.focal(p, t, mode=mode)  # noqa: E731
    out = [
        Row("cross_entropy", "cross_entropy", classification, LF.cross_entropy),
        Row("cross_entropy", "focal multiclass", classification, focal("multiclass")),
        Row("poly1_cross_entropy", "poly1", classification, lambda p, t: LF.poly1(p, t)),
        Row("multiclass_hinge", "hinge", classification, lambda p, t: LF.hinge(p, t, "multiclass")),
        Row("linear_in_target", "bce", classification, LF.bce, target="binary"),
        Row("linear_in_target", "kl_div", classification, LF.kl_div, target="probs"),
    ]
    for size in segmentation:
        out += [
            Row("cross_entropy", "cross_entropy", size, LF.cross_entropy),
            Row("target_cross_entropy", "focal multiclass", size, focal("multiclass")),
            Row("sigmoid_focal", "focal binary", size, focal("binary"), target="binary"),
            Row("softmax_statistics", "dice", size, LF.dice),
            Row("softmax_statistics", "tversky", size, LF.tversky),
            Row("softmax_statistics", "dice_ce", size, LF.dice_ce),
        ]
    return out


def inputs(row: Row) -> tuple[Tensor, Tensor]:
    """Logits that need a gradient and a target for ``row``, from a fixed seed."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(row.size, generator=generator).requires_grad_()
    if row.target == "binary":
        return logits, torch.rand(row.size, generator=generator).round()
    if row.target == "probs":
        return logits, torch.randn(row.size, generator=generator).softmax(1)
    classes = row.size[1]
    target_shape = (row.size[0], *row.size[2:])
    return logits, torch.randint(0, classes, target_shape, generator=generator)


def check_agreement(row: Row, logits: Tensor, target: Tensor) -> None:
    """Raise if the loss with and without the kernel differ in value or gradient."""
    on = row.fn(logits, target)
    (grad_on,) = torch.autograd.grad(on, logits)
    with kernel_off(row.kernel):
        off = row.fn(logits, target)
        (grad_off,) = torch.autograd.grad(off, logits)
    torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_on, grad_off, rtol=1e-4, atol=1e-7)


def main() -> None:
    """Time every row and write ``bench_kernels.{json,md}``."""
    parser = sampling_parser(__doc__ or "", repeats=201, warmup=3, min_sample_s=0.002)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    results = []
    for row in rows(args.quick):
        logits, target = inputs(row)
        check_agreement(row, logits, target)
        with_kernel = forward_backward(row.fn, (logits, target))

        def without_kernel(
            kernel: str = row.kernel, step: Callable[[], None] = with_kernel
        ) -> None:
            with kernel_off(kernel):
                step()

        samples = time_parsed_steps(
            {"kernel": with_kernel, "plain": without_kernel}, args, budget_s=6.0
        )
        ratio = paired_ratio(samples["kernel"], samples["plain"])
        memory = {"kernel": peak_memory(with_kernel, device)}
        memory["plain"] = peak_memory(without_kernel, device)
        memory_ratio = memory["kernel"] / max(memory["plain"], 1)
        results.append(
            {
                "kernel": row.kernel,
                "loss": row.loss,
                "size": "x".join(map(str, row.size)),
                "kernel_ms": 1e3 * statistics.median(samples["kernel"]),
                "plain_ms": 1e3 * statistics.median(samples["plain"]),
                "ratio": ratio,
                "kernel_bytes": memory["kernel"],
                "plain_bytes": memory["plain"],
                "memory_ratio": memory_ratio,
                "keeps": min(ratio, memory_ratio) <= KEEP_BELOW,
            }
        )
        size = results[-1]["size"]
        line = f"{row.kernel} {row.loss} {size}: {ratio:.2f} time, {memory_ratio:.2f} memory"
        print(line, flush=True)
    header = [
        "kernel",
        "loss",
        "size",
        "kernel ms",
        "plain ms",
        "time kernel / plain",
        "memory kernel / plain",
        "wins 5 %",
    ]
    table_rows = [
        [
            r["kernel"],
            r["loss"],
            r["size"],
            f"{r['kernel_ms']:.3f}",
            f"{r['plain_ms']:.3f}",
            f"{r['ratio']:.2f}",
            f"{r['memory_ratio']:.2f}",
            "yes" if r["keeps"] else "no",
        ]
        for r in results
    ]
    payload = {"machine": machine_info(device), "rows": results}
    title = "Each kernel against the plain version of its loss (forward + backward, peak memory)."
    write_results(args.out, "bench_kernels", payload, title, header, table_rows)
    if not args.quick:
        machine = payload["machine"]
        summary = (
            f"{machine['cpu']}, {machine['threads']} thread(s), torch {machine['torch']}, "
            f"heap: {machine['heap']}"
        )
        page = f"{title} {summary}.\n\n{markdown_table(header, table_rows)}\n"
        (DOCS / "kernels.md").write_text(page)


if __name__ == "__main__":
    main()
