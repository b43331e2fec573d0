"""lossplug's Hydra config groups, shipped in the package and found as ``pkg://lossplug.conf``."""
