"""Compare loss weightings on the two-task digits experiment: a table and a plot for the docs.

    python scripts/compare_weightings.py                     # every method, 3 seeds, 15 epochs
    python scripts/compare_weightings.py --methods fixed dwa --seeds 1 --epochs 2 --out /tmp/w

Each method and seed is one ``scripts/train.py experiment=multitask`` run (its own process,
its folder under ``--workdir``). The table gives each method's test accuracy and ink-mass error
(mean and standard deviation over the seeds) from the runs' ``metrics.json``; the plot gives
the validation curves of both tasks, averaged over the seeds, read back from the runs'
TensorBoard event files. Written: ``OUT/multitask.md`` and ``OUT/multitask.png``; the page is a
fragment that ``docs/weighting.md`` includes, so it links the plot from ``OUT``'s parent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from lossplug.report.runs import find_event_dirs, read_scalars
from lossplug.report.tables import markdown_table

ROOT = Path(__file__).resolve().parent.parent
#: each method's overrides of ``experiment=multitask`` (whose default is fixed weights 1 and 1).
METHODS: dict[str, tuple[str, ...]] = {
    "fixed": (),
    "fixed_scaled": ("loss.weights.ink=0.01",),
    "uncertainty": ("loss.weighting=uncertainty",),
    "dwa": ("loss.weighting=dwa",),
    "famo": ("loss.weighting=famo",),
    "aligned_mtl": ("loss.weighting=aligned_mtl",),
}
#: the validation curves plotted, with their axis labels.
CURVES = {"val/acc": "digit accuracy (validation)", "val/ink_mae": "ink mass MAE (validation)"}
TABLE_METRICS = ("test/acc", "test/ink_mae")


def run_job(method: str, seed: int, epochs: int, folder: Path) -> float:
    """Train one method with one seed into ``folder``; the seconds it took.

    Raises:
        RuntimeError: if the run fails (its output is in ``folder/train.log``).
    """
    command = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        "experiment=multitask",
        f"seed={seed}",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={folder}",
        *METHODS[method],
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method}, seed {seed} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def mean_and_spread(values: Sequence[float], digits: int) -> str:
    """``mean ± standard deviation`` (the mean alone for one value)."""
    mean = f"{statistics.fmean(values):.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ± {statistics.stdev(values):.{digits}f}"


def epoch_curve(folders: Sequence[Path], tag: str) -> tuple[list[int], list[float]]:
    """A tag's values per logged step, averaged over the runs in ``folders``."""
    series = [read_scalars(find_event_dirs(folder)[0])[tag] for folder in folders]
    steps = [event.step for event in series[0]]
    means = [statistics.fmean(run[k].value for run in series) for k in range(len(steps))]
    return steps, means


def write_plot(folders: dict[str, list[Path]], out: Path) -> None:
    """Both tasks' validation curves, one line per method."""
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    for axes, (tag, label) in zip(figure.subplots(1, len(CURVES)), CURVES.items(), strict=True):
        for method, runs in folders.items():
            axes.plot(*epoch_curve(runs, tag), label=method, marker="o", markersize=3)
        axes.set(xlabel="step", ylabel=label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.savefig(out, dpi=110)


def write_table(
    folders: dict[str, list[Path]], seconds: dict[str, list[float]], command: str, out: Path
) -> None:
    """The Markdown page: the command that made it, then one row per method."""
    rows = []
    for method, runs in folders.items():
        metrics = [json.loads((folder / "metrics.json").read_text()) for folder in runs]
        rows.append(
            [
                method,
                " ".join(f"`{o}`" for o in METHODS[method]) or "(defaults)",
                mean_and_spread([m["test/acc"] for m in metrics], 3),
                mean_and_spread([m["test/ink_mae"] for m in metrics], 2),
                f"{statistics.fmean(seconds[method]):.0f}",
            ]
        )
    header = ["method", "overrides", "test accuracy", "test ink MAE", "s per run"]
    out.write_text(
        f"Written by `{command}`.\n\n{markdown_table(header, rows)}\n\n"
        f"![Both tasks' validation curves, one line per method]({out.parent.name}/multitask.png)\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..SEEDS per method")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "weighting")
    parser.add_argument("--workdir", type=Path, default=ROOT / "logs" / "compare_weightings")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        parser.error(f"--seeds and --epochs must be >= 1, got {args.seeds} and {args.epochs}")
    folders: dict[str, list[Path]] = {}
    seconds: dict[str, list[float]] = {}
    for method in args.methods:
        for seed in range(1, args.seeds + 1):
            folder = (args.workdir / method / str(seed)).resolve()
            seconds.setdefault(method, []).append(run_job(method, seed, args.epochs, folder))
            folders.setdefault(method, []).append(folder)
            print(f"{method}, seed {seed}: {seconds[method][-1]:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python scripts/compare_weightings.py", *(argv or sys.argv[1:])])
    write_table(folders, seconds, command, args.out / "multitask.md")
    write_plot(folders, args.out / "multitask.png")
    print(f"Written: {args.out / 'multitask.md'}, {args.out / 'multitask.png'}")


if __name__ == "__main__":
    main()
