"""Measurement and output helpers shared by the benchmark scripts of this package.

Time: repeated samples, after warm-up, of one forward + backward pass. Each sample runs the
pass enough times to last at least ``min_sample_s`` (timer resolution stays negligible), and
the candidates are sampled in turn, sample by sample, alternating their order, so a load that
comes and goes on a shared machine hits each of them alike. Times are reported as medians,
and a ratio as the median of the ratios of neighbouring samples, which cancels slow drifts
of the machine's speed.

Peak memory: the most tensor memory held at once during one forward + backward pass, beyond
what was held before it (the inputs), gradients included. On CUDA it is
``torch.cuda.max_memory_allocated``. On the CPU, ``tracemalloc`` sees no tensor storage (torch
allocates outside Python's allocator), so the pass runs under ``torch.profiler`` with
``profile_memory=True``, which records every allocation and free of torch's CPU allocator; the
peak is the maximum of their running sum.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from lossplug.report.tables import markdown_table, text_table

Step = Callable[[], None]


def forward_backward(fn: Callable[..., Tensor], inputs: Sequence[Tensor]) -> Step:
    """A step that computes ``fn(*inputs)``, back-propagates it and drops the gradients.

    The gradients are set to ``None`` after each pass (as ``zero_grad(set_to_none=True)``
    does), so every pass allocates its gradients afresh.
    """
    leaves = [tensor for tensor in inputs if tensor.requires_grad]

    def step() -> None:
        fn(*inputs).backward()
        for leaf in leaves:
            leaf.grad = None

    return step


def sampling_parser(
    description: str, *, repeats: int, warmup: int, min_sample_s: float
) -> argparse.ArgumentParser:
    """The options of a script that samples with :func:`time_steps`, at its defaults.

    ``--out`` (a folder), ``--quick`` (a smoke run; the script picks its sizes),
    ``--threads``, ``--repeats``, ``--warmup`` and ``--min-sample-s``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed samples each")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls first")
    parser.add_argument(
        "--min-sample-s", type=float, default=min_sample_s, help="shortest sample, s"
    )
    return parser


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    steps: dict[str, Step],
    device: torch.device,
    *,
    repeats: int,
    warmup: int,
    min_sample_s: float,
    budget_s: float = float("inf"),
) -> dict[str, list[float]]:
    """Seconds per call of each step, sampled in turn: ``repeats`` samples of each.

    The steps take turns sample by sample (the order reversed every other round), so two
    neighbouring samples of different steps see the same load; compare them pairwise with
    :func:`paired_ratio`.

    Args:
        steps: named steps to time against each other.
        device: where they run (synchronised around each sample).
        repeats: samples per step (fewer if ``budget_s`` runs out, at least 5).
        warmup: untimed calls of each step first.
        min_sample_s: each sample repeats the step until it lasts at least this long.
        budget_s: rough limit on the total time spent sampling.

    Returns:
        ``{name: [seconds per call, one per sample]}``.
    """
    calls, single = {}, {}
    for name, step in steps.items():
        for _ in range(warmup):
            step()
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        single[name] = max(time.perf_counter() - start, 1e-9)
        calls[name] = max(1, math.ceil(min_sample_s / single[name]))
    round_s = sum(calls[name] * single[name] for name in steps)
    if budget_s < math.inf:
        repeats = max(min(repeats, int(budget_s / round_s)), min(repeats, 5))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for repeat in range(repeats):
        for name in order if repeat % 2 == 0 else reversed(order):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls[name]):
                steps[name]()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / calls[name])
    return samples


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the ratios of samples taken side by side (round ``i`` of each)."""
    return statistics.median(_ratios(numerator, denominator))


def paired_ratio_quartiles(
    numerator: list[float], denominator: list[float]
) -> tuple[float, float, float]:
    """First quartile, median and third quartile of the side-by-side ratios.

    The spread says how far the machine's noise moves a single pair: a median just over a
    target with a quartile range that straddles it is a close call, not a clear miss. It needs
    at least one sample of each; with a single one all three are that one ratio.
    """
    ratios = _ratios(numerator, denominator)
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    first, median, third = statistics.quantiles(ratios, n=4, method="inclusive")
    return first, median, third


def _ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def peak_memory(step: Step, device: torch.device) -> int:
    """Peak bytes of tensor memory allocated during one call of ``step``, beyond the baseline."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - baseline
    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        step()
    events = [
        event for event in prof.profiler.kineto_results.events() if event.name() == "[memory]"
    ]
    held = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        held += event.nbytes()
        peak = max(peak, held)
    return peak


def time_parsed_steps(
    steps: dict[str, Step], args: argparse.Namespace, *, budget_s: float = math.inf
) -> dict[str, list[float]]:
    """:func:`time_steps` on the CPU with the options of :func:`sampling_parser`, as parsed."""
    return time_steps(
        steps,
        torch.device("cpu"),
        repeats=args.repeats,
        warmup=args.warmup,
        min_sample_s=args.min_sample_s,
        budget_s=budget_s,
    )


def loss_step_peak_memory(
    fn: Callable[..., Tensor], inputs: Sequence[Tensor], device: torch.device
) -> int:
    """:func:`peak_memory` of one :func:`forward_backward` step, after one untimed step."""
    step = forward_backward(fn, inputs)
    step()
    return peak_memory(step, device)


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to ``/dev/null`` for a block.

    The profiler's C++ side prints ``profiler_start``/``profiler_stop`` lines on every use,
    two per measured row; Python's own ``sys.stderr`` is flushed first and restored after.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def machine_info(device: torch.device) -> dict[str, object]:
    """The machine and library versions a result was measured with."""
    info: dict[str, object] = {
        "device": str(device),
        "cpu": _cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "heap": heap_settings(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def heap_settings() -> str:
    """The heap settings of glibc in the environment (they decide how often memory faults in)."""
    names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    settings = [f"{name}={os.environ[name]}" for name in names if name in os.environ]
    return " ".join(settings) or "glibc's defaults"


def _cpu_model() -> str:
    """The CPU's model name as ``lscpu`` reports it (``platform.processor()`` as a fallback)."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in listing.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return platform.processor() or "unknown"


def write_results(
    out: Path,
    stem: str,
    payload: Mapping[str, object],
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
) -> None:
    """Print a result's table, write it as ``{stem}.json`` and ``{stem}.md``, and say where.

    Args:
        out: the output folder (created if missing).
        stem: the two files' name, without its suffix.
        payload: what ``{stem}.json`` holds: the machine, the settings and the rows.
        title: the paragraph above the table in ``{stem}.md``.
        header: the table's column names.
        rows: the table's cells, printed as aligned text and written as Markdown.
    """
    print("\n" + text_table(header, rows))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{stem}.md").write_text(title + "\n\n" + markdown_table(header, rows) + "\n")
    print(f"\nwritten: {out / f'{stem}.json'}, {out / f'{stem}.md'}")
