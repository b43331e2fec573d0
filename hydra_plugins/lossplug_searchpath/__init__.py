"""Hydra plugin that makes lossplug's config groups available to every Hydra app."""
