"""Text tables for the scripts' reports; no heavy imports, so a report starts fast."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table, its columns padded to line up in a terminal too."""
    cells = _cells(header, rows)
    widths = _widths(cells)
    lines = ["| " + " | ".join(_padded(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with aligned columns, for the terminal."""
    cells = _cells(header, rows)
    widths = _widths(cells)
    lines = ["  ".join(_padded(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cells(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[list[str]]:
    return [list(map(str, header))] + [list(map(str, row)) for row in rows]


def _widths(cells: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]


def _padded(row: Sequence[str], widths: Sequence[int]) -> list[str]:
    return [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
