"""A TensorBoard server over a folder of runs, started and stopped from Python.

:func:`tensorboard_server` runs ``tensorboard --logdir`` on 127.0.0.1 and a port the system
picks, and yields its address once TensorBoard serves a given tag (it loads event files in the
background). The screenshots (:mod:`lossplug.report.screenshots`) and the tests use it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: TensorBoard prints "TensorBoard 2.x at http://127.0.0.1:PORT/ (Press CTRL+C to quit)".
SERVING = re.compile(r"at (http://127\.0\.0\.1:\d+)/")
#: requests to the local server never go through a proxy from the environment.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """The JSON a TensorBoard data URL answers; with ``body``, to a POST of it."""
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    with LOCAL.open(urllib.request.Request(url, data, headers), timeout=timeout) as response:
        return json.load(response)


@contextmanager
def tensorboard_server(
    logdir: Path, wait_for_tag: str = "val/loss", timeout: float = 60.0
) -> Iterator[str]:
    """``tensorboard --logdir logdir`` on 127.0.0.1, stopped on exit; yields its address.

    Raises:
        RuntimeError: if TensorBoard exits, or serves no ``wait_for_tag`` within ``timeout``
            seconds (its output is in the message).
    """
    with tempfile.TemporaryFile() as output:
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", "0"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield _wait_until_serving(server, output, wait_for_tag, time.monotonic() + timeout)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def _wait_until_serving(
    server: subprocess.Popen[bytes], output: Any, tag: str, deadline: float
) -> str:
    """The server's address once it serves ``tag``."""
    url = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        output.seek(0)
        match = SERVING.search(output.read().decode(errors="replace"))
        url = url or (match.group(1) if match else None)
        served = get_json(f"{url}/data/plugin/scalars/tags") if url else {}
        if any(tag in tags for tags in served.values()):
            return url
        time.sleep(0.3)
    output.seek(0)
    printed = output.read().decode(errors="replace")
    raise RuntimeError(f"tensorboard served no {tag!r} (exit status {server.poll()}):\n{printed}")
