"""Reading back the Markdown tables that reports and benchmarks print and write."""

from __future__ import annotations


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of each row of the Markdown table in ``text``, separator line left out."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]
    return [row for row in rows if not all(set(cell) <= {"-"} for cell in row)]
