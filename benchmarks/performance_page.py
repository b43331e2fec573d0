"""The loss benchmark's table and plot for the documentation, written from its JSON output.

``python -m benchmarks.bench_losses`` writes ``bench_results/bench_losses.json``; this module
turns that file into what ``docs/performance.md`` includes:

- ``docs/performance/losses.md``: how and when the table was made, the method and machine line,
  the plot and the table itself (:func:`loss_table`, the same table as ``bench_losses.md``);
- ``docs/performance/losses.png``: each timed row's time and peak-memory ratio, lossplug / peer.

A complete run of the loss benchmark (no ``--quick``, no ``--losses``) writes both at its end;
from any of its JSON files:

    python -m benchmarks.performance_page bench_results/bench_losses.json
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lossplug.report.tables import markdown_table

#: where the page's files go: ``docs/performance/`` of this repository.
DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance"
#: the page's files within ``DOCS``; the image path is relative to ``docs/performance.md``.
TABLE_FILE = "losses.md"
PLOT_FILE = "losses.png"
PLOT_LINK = f"performance/{PLOT_FILE}"

HEADER = ("loss", "size", "peer", "lossplug ms", "peer ms", "time ratio", "ratio quartiles")
HEADER += ("lossplug MiB", "peer MiB", "memory ratio", "targets")
COMPILED_HEADER = ("compiled lossplug ms", "compiled peer ms", "compiled ratio")
#: the peers' library versions the benchmark records with the machine, as named on the page.
PEER_LIBRARIES = {"monai": "MONAI", "kornia": "kornia", "pytorch_metric_learning": "PML"}

Payload = Mapping[str, Any]


def loss_table(payload: Payload) -> tuple[tuple[str, ...], list[list[str]]]:
    """The header and rows of the loss benchmark's table, one row per JSON row.

    A row whose two implementations disagreed holds only its name and ``DISAGREES``; the
    compiled columns are there when the run used ``--compile``.

    Args:
        payload: the benchmark's JSON output, read.

    Returns:
        The column names and the formatted cells of each row.
    """
    compiled = payload["settings"]["compile"]
    header = HEADER + (COMPILED_HEADER if compiled else ())
    rows = []
    for result in payload["rows"]:
        row = [result["loss"], result["size"], result["peer"]]
        if result["agreement"] != "ok":
            row += ["DISAGREES: not timed", *[""] * (len(header) - 4)]
        else:
            met = "time " + ("ok" if result["time_target_met"] else "MISSED")
            met += ", memory " + ("ok" if result["memory_target_met"] else "MISSED")
            row += [
                f"{result['ours_s'] * 1e3:.3f}",
                f"{result['peer_s'] * 1e3:.3f}",
                f"{result['time_ratio']:.2f} (<= {result['target_time_ratio']:.2f})",
                "{:.2f}-{:.2f}".format(*result["time_ratio_quartiles"]),
                f"{result['ours_bytes'] / 2**20:.2f}",
                f"{result['peer_bytes'] / 2**20:.2f}",
                f"{result['memory_ratio']:.2f}",
                met,
            ]
            if compiled:
                row += [
                    f"{result['compiled_ours_s'] * 1e3:.3f}",
                    f"{result['compiled_peer_s'] * 1e3:.3f}",
                    f"{result['compiled_time_ratio']:.2f}",
                ]
        rows.append(row)
    return header, rows


def title(payload: Payload) -> str:
    """What the table measures and the machine it ran on, in one paragraph."""
    machine, settings = payload["machine"], payload["settings"]
    device = machine["gpu"] if "gpu" in machine else f"{machine['cpu']}, CPU only"
    peers = ", ".join(f"{name} {machine[key]}" for key, name in PEER_LIBRARIES.items())
    return (
        f"Forward + backward, median of {settings['repeats']} samples; ratio = lossplug / peer, "
        "the median of side-by-side samples' ratios, and their quartiles. "
        f"Machine: {device}; torch threads: {machine['threads']}; torch {machine['torch']}, "
        f"Python {machine['python']}, {peers}; heap: {machine.get('heap', 'not recorded')}. "
        f"Run of {payload['date']}."
    )


def ratio_figure(payload: Payload) -> Figure:
    """Horizontal bars of each timed row's time and memory ratio, with a line at 1.

    The time bars carry the ratio quartiles as whiskers; rows that disagreed (not timed) are
    left out. Rows run top to bottom in table order.

    Args:
        payload: the benchmark's JSON output, read.

    Returns:
        The figure (matplotlib's Agg canvas, no display needed).
    """
    timed = [row for row in payload["rows"] if row["agreement"] == "ok"]
    labels = [f"{row['loss']} {row['size']} · {row['peer']}" for row in timed]
    positions = range(len(timed))
    figure = Figure(figsize=(11, 1.5 + 0.28 * len(timed)), layout="constrained")
    time_axes, memory_axes = figure.subplots(1, 2, sharey=True)
    ratios = np.array([row["time_ratio"] for row in timed])
    quartiles = np.array([row["time_ratio_quartiles"] for row in timed]).reshape(-1, 2).T
    time_axes.barh(positions, ratios, xerr=np.abs(quartiles - ratios), color="C0")
    memory_axes.barh(positions, [row["memory_ratio"] for row in timed], color="C1")
    for axes, name in ((time_axes, "time"), (memory_axes, "peak memory")):
        axes.axvline(1.0, color="black", linewidth=1)
        axes.set(title=f"{name}, lossplug / peer", xlabel="ratio (below 1: lossplug better)")
        axes.grid(axis="x", alpha=0.3)
    time_axes.set_yticks(positions, labels, fontsize="small")
    time_axes.invert_yaxis()
    return figure


def page(payload: Payload, source: str, today: datetime.date) -> str:
    """The Markdown that ``docs/performance.md`` includes.

    Args:
        payload: the benchmark's JSON output, read.
        source: the JSON file's path, as the regenerating command names it.
        today: the date the page is written.

    Returns:
        The page's text, ending with a newline.
    """
    command = f"python -m benchmarks.performance_page {source}"
    parts = [
        f"*Written by `{command}` on {today.isoformat()}.*",
        title(payload),
        f"![Time and peak-memory ratio of each row, lossplug / peer]({PLOT_LINK})",
        markdown_table(*loss_table(payload)),
    ]
    return "\n\n".join(parts) + "\n"


def write_fragment(
    name: str,
    title: str,
    machine: Mapping[str, Any],
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
) -> Path:
    """Write a benchmark's table as the docs fragment ``DOCS/{name}.md`` a page includes.

    Args:
        name: the fragment's file name without ``.md``.
        title: what the table measures (one sentence, no final full stop).
        machine: the run's ``machine_info``: its CPU and torch version are named.
        header: the column names.
        rows: the table's rows.

    Returns:
        The path written.
    """
    path = DOCS / f"{name}.md"
    path.write_text(
        f"{title}; {machine['cpu']}, torch {machine['torch']}.\n\n{markdown_table(header, rows)}\n"
    )
    return path


def write_page(source: Path, out: Path = DOCS) -> tuple[Path, Path]:
    """Write the table page and the plot for the JSON file ``source`` into ``out``.

    Args:
        source: a JSON file written by ``python -m benchmarks.bench_losses``.
        out: the folder to write ``losses.md`` and ``losses.png`` into (created if missing).

    Returns:
        The paths of the two files written.
    """
    payload = json.loads(source.read_text())
    out.mkdir(parents=True, exist_ok=True)
    table_path, plot_path = out / TABLE_FILE, out / PLOT_FILE
    table_path.write_text(page(payload, source.as_posix(), datetime.date.today()))
    ratio_figure(payload).savefig(plot_path, dpi=110)
    return table_path, plot_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="bench_losses' JSON output")
    parser.add_argument("--out", type=Path, default=DOCS, help=f"output folder (default {DOCS})")
    args = parser.parse_args(argv)
    written = write_page(args.json, args.out)
    print("written: " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
