"""Report TensorBoard runs: the final value of every loss component per run, and their curves.

    python scripts/tb_report.py logs/multirun/2026-01-31/12-00-00          # a sweep: one row a run
    python scripts/tb_report.py logs/runs/2026-01-31/12-00-00 --format plain
    python scripts/tb_report.py logs/multirun/... --tags '^val/' --out val.png

The same command as ``python -m lossplug.report``; see :mod:`lossplug.report.runs`.
"""

from lossplug.report.cli import main

if __name__ == "__main__":
    main()
