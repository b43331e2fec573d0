"""The documentation site builds with every warning an error (``make docs``)."""

from __future__ import annotations

from conftest import REPO, run_python


def test_the_docs_site_builds_strictly(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")  # mkdocs-material's notice about its future
    result = run_python("-m", "mkdocs", "build", "--strict", "-d", tmp_path, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    api = (tmp_path / "api" / "index.html").read_text()
    assert "compute_loss" in api and "register_criterion" in api  # rendered from docstrings
    for page in ("own-project", "exactness", "weighting", "reliability", "reports", "performance"):
        assert (tmp_path / page / "index.html").is_file()
