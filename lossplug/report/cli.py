"""The command line of the run report: a table of final values and a PNG of the curves.

    python -m lossplug.report logs/multirun/2026-01-31/12-00-00          # a sweep: one row a run
    python -m lossplug.report logs/runs/2026-01-31/12-00-00 --format plain
    python -m lossplug.report logs/multirun/... --tags '^val/' --out val.png

``scripts/tb_report.py`` runs the same command from a checkout of the repository.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from lossplug.report.runs import (
    DEFAULT_TAGS,
    ReportError,
    common_overrides,
    final_values_table,
    label_runs,
    load_runs,
    plot_curves,
    select_tags,
)
from lossplug.report.tables import markdown_table, text_table


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], table_format: str) -> str:
    """The table as GitHub Markdown (``"markdown"``) or as aligned plain text (``"plain"``)."""
    return (markdown_table if table_format == "markdown" else text_table)(header, rows)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The report's options; ``prog`` names the command in usage and error lines."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Final loss components and metrics of TensorBoard runs, and their curves.",
    )
    parser.add_argument("folder", type=Path, help="a run folder, or a folder of runs (a sweep)")
    parser.add_argument(
        "--out", type=Path, default=None, help="the PNG plot to write (default: FOLDER/report.png)"
    )
    parser.add_argument(
        "--tags",
        default=DEFAULT_TAGS,
        help=f"regular expression the tags must match (re.search; default: {DEFAULT_TAGS!r})",
    )
    parser.add_argument("--format", choices=("markdown", "plain"), default="markdown")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed options: ``tags`` compiled, ``out`` defaulted; bad values exit with status 2."""
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"no such folder: {args.folder}")
    try:
        args.tags = re.compile(args.tags)
    except re.error as error:
        parser.error(f"--tags {args.tags!r} is not a regular expression: {error}")
    args.out = args.out or args.folder / "report.png"
    return args


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """Print the table of the runs under a folder and write the plot of their curves.

    Args:
        argv: the command-line arguments (default: ``sys.argv[1:]``).
        prog: the command's name in messages (default: the script's file name).
    """
    parser = build_parser(prog)
    args = parse_args(parser, argv)
    try:
        runs = load_runs(args.folder)
        tags = select_tags(runs, args.tags)
    except ReportError as error:
        parser.exit(1, f"{parser.prog}: {error}\n")
    common = common_overrides(runs)
    if common:
        print(f"Overrides{' of every run' if len(runs) > 1 else ''}: {' '.join(common)}\n")
    labelled = label_runs(runs, common)
    print(format_table(*final_values_table(labelled, tags), args.format))
    if plot_curves(labelled, tags, args.out):
        print(f"\nPlot: {args.out}")
    else:
        print("\nNo loss tag among the selected tags: no plot written.")
