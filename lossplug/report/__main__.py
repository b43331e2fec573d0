"""``python -m lossplug.report FOLDER``: see :mod:`lossplug.report.cli`."""

from lossplug.report.cli import main

if __name__ == "__main__":
    main(prog="python -m lossplug.report")
