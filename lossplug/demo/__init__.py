"""The demo app of ``scripts/train.py``: bundled-data datamodules, tiny models, the training job.

Not part of the library's API: a user's own project needs none of it. Its Hydra config is the
repository's top-level ``conf/``.
"""
