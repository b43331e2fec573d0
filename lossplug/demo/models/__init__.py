"""Tiny demo networks and the LightningModules that train them with any lossplug loss."""

from lossplug.demo.models.knn import KNNAccuracy
from lossplug.demo.models.multitask import MultiTask, ink_mass
from lossplug.demo.models.nets import MLP, TinyUNet
from lossplug.demo.models.tasks import Classifier, Embedder, Regressor, Segmenter, to_input_space
from lossplug.demo.models.vae import VAE, gaussian_kl

__all__ = [
    "MLP",
    "VAE",
    "Classifier",
    "Embedder",
    "KNNAccuracy",
    "MultiTask",
    "Regressor",
    "Segmenter",
    "TinyUNet",
    "gaussian_kl",
    "ink_mass",
    "to_input_space",
]
