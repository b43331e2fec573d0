"""Tiny demo networks and the LightningModules that train them with any lossplug loss."""

from lossplug.demo.models.knn import KNNAccuracy
from lossplug.demo.models.nets import MLP, TinyUNet
from lossplug.demo.models.tasks import Classifier, Embedder, Regressor, Segmenter, to_input_space
from lossplug.demo.models.vae import VAE, gaussian_kl

__all__ = [
    "MLP",
    "VAE",
    "Classifier",
    "Embedder",
    "KNNAccuracy",
    "Regressor",
    "Segmenter",
    "TinyUNet",
    "gaussian_kl",
    "to_input_space",
]
