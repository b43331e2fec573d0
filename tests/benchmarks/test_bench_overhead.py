"""bench_overhead runs end to end; timings are not asserted (the machine is shared)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import REPO, run_python


def test_bench_overhead_quick_writes_one_row_per_component_count_and_interval(tmp_path: Path):
    result = run_python(
        "-m", "benchmarks.bench_overhead", "--quick", "--out", tmp_path, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads((tmp_path / "bench_overhead.json").read_text())
    rows = payload["rows"]
    assert [(row["components"], row["log_every_n_steps"]) for row in rows] == [
        (1, 10),
        (1, 1),
        (4, 10),
        (4, 1),
        (16, 10),
        (16, 1),
    ]
    for row in rows:
        assert row["mixin_step_ms"] > 0 and row["handwritten_step_ms"] > 0
        assert row["step_ratio"] > 0 and row["epoch_ratio"] > 0
        assert row["same_weights"] is True  # both modules did the same computation
    assert payload["settings"]["quick"] is True and payload["settings"]["repeats"] == 1
    assert payload["machine"]["cpu"] and payload["source"]
    markdown = re.sub(" +", " ", (tmp_path / "bench_overhead.md").read_text())  # cells unpadded
    assert "| components | log every n steps | mixin ms / step |" in markdown
    assert "| 16 | 1 |" in markdown
