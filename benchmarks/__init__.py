"""Benchmarks of lossplug's losses and Lightning glue, each a script run from the repository root.

    python -m benchmarks.bench_losses           # the losses against torch, MONAI, kornia and PML
    python -m benchmarks.bench_losses --quick   # tiny sizes, one sample: a smoke run

Every ``bench_*`` module writes ``{name}.json`` and ``{name}.md`` into ``bench_results/``
(``--out`` changes it), takes ``--quick`` and describes its method in its docstring.
:mod:`benchmarks.benchkit` holds the measuring and output helpers they share, and
:mod:`benchmarks.performance_page` writes the documentation's loss table from
``bench_losses``' JSON. This package imports lossplug; lossplug never imports it.
"""
