"""Reports of finished runs: tables and plots read from their TensorBoard event files.

    python -m lossplug.report logs/multirun/2026-01-31/12-00-00    # a sweep: one row a run

:mod:`lossplug.report.runs` reads the runs and plots their curves, :mod:`lossplug.report.cli`
is the command line and :mod:`lossplug.report.tables` writes Markdown and plain-text tables
(the benchmarks use it too); :mod:`lossplug.report.server` runs a TensorBoard server over the
runs and :mod:`lossplug.report.screenshots` photographs its tabs with headless Chromium.
``import lossplug`` does not load this package; the plot needs
matplotlib (``pip install lossplug[report]``).
"""
