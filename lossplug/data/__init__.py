"""Demo LightningDataModules: real bundled data (digits, diabetes) and generated shapes."""

from lossplug.data.base import TensorDataModule
from lossplug.data.shapes import ShapesDataModule
from lossplug.data.sklearn_data import DiabetesDataModule, DigitsDataModule

__all__ = ["DiabetesDataModule", "DigitsDataModule", "ShapesDataModule", "TensorDataModule"]
