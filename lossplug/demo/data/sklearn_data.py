"""Real, small data sets that ship with scikit-learn: nothing is downloaded."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lossplug.demo.data.base import TensorDataModule


class DigitsDataModule(TensorDataModule):
    """Scikit-learn's handwritten digits: 1,797 images of 8x8 pixels, 10 classes.

    Inputs are the 64 pixels scaled to [0, 1], float32; targets are class indices (long).
    Options as in :class:`~lossplug.demo.data.base.TensorDataModule`.
    """

    num_features = 64
    num_classes = 10

    def load(self) -> tuple[Tensor, Tensor]:
        """The pixels and labels."""
        digits = _bundled("load_digits")
        inputs = torch.as_tensor(digits.data, dtype=torch.float32) / 16.0
        return inputs, torch.as_tensor(digits.target, dtype=torch.long)


class DiabetesDataModule(TensorDataModule):
    """Scikit-learn's diabetes regression data: 442 patients, 10 features, one target.

    Features and target are standardised with the training split's mean and standard
    deviation, so a loss of 1 is the target's variance. Options as in
    :class:`~lossplug.demo.data.base.TensorDataModule`.
    """

    num_features = 10

    def load(self) -> tuple[Tensor, Tensor]:
        """The features and the disease-progression target."""
        diabetes = _bundled("load_diabetes")
        inputs = torch.as_tensor(diabetes.data, dtype=torch.float32)
        return inputs, torch.as_tensor(diabetes.target, dtype=torch.float32)

    def normalise(self, inputs: Tensor, targets: Tensor, train: Tensor) -> tuple[Tensor, Tensor]:
        """Standardise features and target with statistics of the training split."""
        return _standardise(inputs, train), _standardise(targets, train)


def _bundled(loader: str) -> Any:
    """A data set bundled with scikit-learn (an optional dependency), e.g. ``load_digits``."""
    try:
        from sklearn import datasets
    except ImportError as error:
        raise ImportError(
            "the demo data sets come with scikit-learn: pip install 'lossplug[examples]'"
        ) from error
    return getattr(datasets, loader)()


def _standardise(values: Tensor, train: Tensor) -> Tensor:
    reference = values[train]
    return (values - reference.mean(0)) / reference.std(0)
