"""Tiny demo networks and the LightningModules that train them with any lossplug loss."""

from lossplug.models.knn import KNNAccuracy
from lossplug.models.nets import MLP, TinyUNet
from lossplug.models.tasks import Classifier, Embedder, Regressor, Segmenter, to_input_space

__all__ = [
    "MLP",
    "Classifier",
    "Embedder",
    "KNNAccuracy",
    "Regressor",
    "Segmenter",
    "TinyUNet",
    "to_input_space",
]
