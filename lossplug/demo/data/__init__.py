"""Demo LightningDataModules: real bundled data (digits, diabetes) and generated shapes."""

from lossplug.demo.data.base import TensorDataModule
from lossplug.demo.data.shapes import ShapesDataModule
from lossplug.demo.data.sklearn_data import DiabetesDataModule, DigitsDataModule

__all__ = ["DiabetesDataModule", "DigitsDataModule", "ShapesDataModule", "TensorDataModule"]
