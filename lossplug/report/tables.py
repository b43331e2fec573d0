"""Text tables for reports and benchmarks: GitHub Markdown and aligned plain text.

Both writers pad every column to its widest cell, so a Markdown table also lines up in a
terminal. This module imports nothing beyond the standard library.

Example:
    >>> print(markdown_table(["loss", "ms"], [["dice", 4.2], ["focal", 12.5]]))
    | loss  | ms   |
    |-------|------|
    | dice  | 4.2  |
    | focal | 12.5 |
    >>> print(text_table(["loss", "ms"], [["dice", 4.2]]))
    loss  ms
    ----  ---
    dice  4.2
"""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table, its columns padded to line up in a terminal too.

    Args:
        header: the column names.
        rows: the cells of each row, as many as ``header`` has (written with ``str``).

    Returns:
        The table's lines, joined by newlines, without a trailing newline.
    """
    cells = _cells(header, rows)
    widths = _widths(cells)
    lines = ["| " + " | ".join(_padded(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def text_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with aligned columns, for the terminal.

    Args:
        header: the column names.
        rows: the cells of each row, as many as ``header`` has (written with ``str``).

    Returns:
        The header, a line of dashes under each column and the rows, joined by newlines.
    """
    cells = _cells(header, rows)
    widths = _widths(cells)
    lines = ["  ".join(_padded(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cells(header: Sequence[object], rows: Sequence[Sequence[object]]) -> list[list[str]]:
    return [list(map(str, header))] + [list(map(str, row)) for row in rows]


def _widths(cells: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]


def _padded(row: Sequence[str], widths: Sequence[int]) -> list[str]:
    return [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
