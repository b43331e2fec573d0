"""A LightningDataModule over in-memory tensors with a seeded train/val/test split."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lossplug._validation import check_number


class TensorDataModule(pl.LightningDataModule):
    """Loads ``(inputs, targets)`` once, splits them with a fixed seed and serves batches.

    Subclasses implement :meth:`load`; they may override :meth:`normalise` to fit a
    transform on the training split only.

    Args:
        batch_size: samples per batch.
        val_fraction: share of the samples held out for validation.
        test_fraction: share of the samples held out for testing.
        seed: seed of the split (and of generated data), independent of the global seed.
        num_workers: ``DataLoader`` worker processes; 0 loads in the main process.
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            check_number(type(self).__name__, name, fraction, minimum=0.0, maximum=0.5)
        self.save_hyperparameters()
        self.splits: dict[str, TensorDataset] = {}

    def load(self) -> tuple[Tensor, Tensor]:
        """All samples, as ``(inputs, targets)`` tensors with the samples along dim 0."""
        raise NotImplementedError

    def normalise(self, inputs: Tensor, targets: Tensor, train: Tensor) -> tuple[Tensor, Tensor]:
        """Transform all samples with statistics of the training indices ``train``; no-op here."""
        return inputs, targets

    def setup(self, stage: str | None = None) -> None:
        """Load and split the data (once)."""
        if self.splits:
            return
        inputs, targets = self.load()
        count = len(inputs)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.hparams.seed))
        num_val = round(count * self.hparams.val_fraction)
        num_test = round(count * self.hparams.test_fraction)
        indices = {
            "val": order[:num_val],
            "test": order[num_val : num_val + num_test],
            "train": order[num_val + num_test :],
        }
        inputs, targets = self.normalise(inputs, targets, indices["train"])
        self.splits = {
            name: TensorDataset(inputs[index], targets[index]) for name, index in indices.items()
        }

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches."""
        return self._loader("test")

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )
