"""Screenshots of TensorBoard's tabs in headless Chromium (``lossplug.report.screenshots``).

CI installs Debian's chromium package (``.ci/run``); elsewhere the test skips without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from tiny_runs import tiny_sweep

from lossplug.report.screenshots import TABS, screenshots

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("chromium") is None and os.environ.get("CI") != "true",
        reason="needs Debian's chromium package (apt-get install chromium); CI installs it",
    ),
]


def test_every_tab_is_drawn(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    written = screenshots(tiny_sweep(tmp_path_factory), tmp_path, size=(1200, 800))
    assert [path.name for path in written] == [f"{tab}.png" for tab in TABS]
    for path in written:
        with Image.open(path) as image:
            assert image.size == (1200, 800)
            colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
            # a drawn page: charts and text in many colours, not a blank or an error page
            assert colours is None or len(colours) > 200, path.name


def test_a_missing_chromium_is_named(tmp_path_factory, tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        screenshots(tiny_sweep(tmp_path_factory), tmp_path, chromium="no-such-chromium")
