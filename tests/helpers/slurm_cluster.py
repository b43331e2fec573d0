"""A real one-node Slurm cluster on this machine, for tests (scripts/slurm_cluster.sh).

The fixture starts it once per test session and stops it at the end, checking that nothing
is left running. Where Slurm is missing and cannot be installed (not root), the tests that
use it are skipped with the reason; CI runs as root and installs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm_cluster.sh"


def free_port_pair() -> int:
    """A port whose next port is free too (slurmctld's and slurmd's)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def daemon_pids(folder: Path) -> dict[str, int]:
    """The pids in the cluster's pid files that are still running."""
    pids = {}
    for name in ("munged", "slurmctld", "slurmd"):
        path = folder / f"{name}.pid"
        if path.exists():
            pid = int(path.read_text())
            stat = Path(f"/proc/{pid}/stat")
            # running: not gone, and not a zombie (exited, waiting for its parent to reap it)
            if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids[name] = pid
    return pids


@pytest.fixture(scope="session")
def slurm() -> Iterator[dict[str, str]]:
    """The environment that reaches the cluster (``SLURM_CONF``), while it runs."""
    if shutil.which("slurmctld") is None and os.geteuid() != 0:
        pytest.skip("Slurm (slurm-wlm) is not installed and installing it needs root")
    folder = Path(tempfile.mkdtemp(prefix="lpslurm.", dir="/tmp"))  # short: munge's socket
    env = {**os.environ, "SLURM_PORT": str(free_port_pair())}
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", str(folder)], env=env, capture_output=True, text=True
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], env=env, check=False)
        left = daemon_pids(folder)
        assert not left, f"slurm_cluster.sh stop left these running: {left}"
        shutil.rmtree(folder, ignore_errors=True)
