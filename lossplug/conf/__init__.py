"""lossplug's Hydra config groups for any app, found as ``pkg://lossplug.conf``.

``loss``, ``optimizer``, ``scheduler`` and ``diagnostics``; the demo app's own groups are in
the repository's top-level ``conf/``.
"""
