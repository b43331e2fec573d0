"""Screenshots of TensorBoard's SCALARS, CUSTOM SCALARS and HPARAMS tabs, with headless Chromium.

    python -m lossplug.report.screenshots logs/multirun/2026-01-31/12-00-00 --out shots/

Starts a TensorBoard server over the folder (:mod:`lossplug.report.server`), opens each tab in
headless Chromium (Debian's ``chromium`` package; ``--chromium`` names another binary) and
writes ``scalars.png``, ``custom_scalars.png`` and ``hparams.png``: what a person opening
``tensorboard --logdir`` sees.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lossplug.report.server import tensorboard_server

#: TensorBoard's tabs, by the name in their URL.
TABS = ("scalars", "custom_scalars", "hparams")


def screenshots(
    logdir: Path,
    out: Path,
    chromium: str = "chromium",
    size: tuple[int, int] = (1400, 900),
    render_ms: int = 15000,
) -> list[Path]:
    """Screenshot every tab of :data:`TABS` for the runs under ``logdir``.

    Args:
        logdir: the folder of runs, as given to ``tensorboard --logdir``.
        out: the folder the PNG files go to (created if needed).
        chromium: the Chromium binary.
        size: the window's width and height in pixels.
        render_ms: Chromium's virtual time for the page to load its data and draw.

    Returns:
        The files written, in the order of :data:`TABS`.

    Raises:
        FileNotFoundError: if there is no ``chromium`` binary.
    """
    binary = shutil.which(chromium)
    if binary is None:
        raise FileNotFoundError(
            f"no {chromium!r} to take screenshots with: install Debian's chromium package "
            "(apt-get install chromium) or pass --chromium with the path of another"
        )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tensorboard_server(logdir) as url:
        for tab in TABS:
            path = out / f"{tab}.png"
            subprocess.run(
                [
                    binary,
                    "--headless",
                    "--no-sandbox",  # as root, in containers
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--window-size={size[0]},{size[1]}",
                    f"--virtual-time-budget={render_ms}",
                    f"--screenshot={path}",
                    f"{url}/#{tab}",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: ``python -m lossplug.report.screenshots LOGDIR --out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("logdir", type=Path, help="the folder of runs")
    parser.add_argument("--out", type=Path, default=Path("screenshots"), help="where the PNGs go")
    parser.add_argument("--chromium", default="chromium", help="the Chromium binary")
    args = parser.parse_args(argv)
    for path in screenshots(args.logdir, args.out, args.chromium):
        print(path)


if __name__ == "__main__":
    main()
