"""Generated images of circles and squares for semantic segmentation."""

from __future__ import annotations

import torch
from torch import Tensor

from lossplug.demo.data.base import TensorDataModule


class ShapesDataModule(TensorDataModule):
    """Noisy grey images with circles (class 1) and squares (class 2) on background (class 0).

    Each image holds ``shapes_per_image`` shapes of random kind, centre and size; a later
    shape covers an earlier one. Circles are brighter than squares, and Gaussian noise makes
    single pixels ambiguous, so the model must use the neighbourhood. Targets are
    ``(N, H, W)`` class indices; the background covers most pixels, as in real segmentation.

    Args:
        num_samples: images generated (then split).
        size: image height and width in pixels.
        shapes_per_image: shapes drawn in each image.
        noise: standard deviation of the additive Gaussian noise.
        **options: as in :class:`~lossplug.demo.data.base.TensorDataModule`.
    """

    num_classes = 3

    def __init__(
        self,
        num_samples: int = 800,
        size: int = 24,
        shapes_per_image: int = 2,
        noise: float = 0.3,
        **options: int | float,
    ) -> None:
        super().__init__(**options)  # saves every argument above as a hyperparameter

    def load(self) -> tuple[Tensor, Tensor]:
        """Generate the images ``(N, 1, H, W)`` and masks ``(N, H, W)``, seeded."""
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed)
        n, size = hp.num_samples, hp.size
        rows = torch.arange(size, dtype=torch.float32).view(1, size, 1)
        cols = torch.arange(size, dtype=torch.float32).view(1, 1, size)
        masks = torch.zeros(n, size, size, dtype=torch.long)
        for _ in range(hp.shapes_per_image):
            kind = torch.randint(1, self.num_classes, (n, 1, 1), generator=generator)
            radius = size * (0.1 + 0.12 * torch.rand(n, 1, 1, generator=generator))
            dy, dx = (
                (
                    grid - radius - (size - 2 * radius) * torch.rand(n, 1, 1, generator=generator)
                ).abs()
                for grid in (rows, cols)
            )
            inside_circle = dy**2 + dx**2 <= radius**2
            inside_square = torch.maximum(dy, dx) <= radius * 0.8
            inside = torch.where(kind == 1, inside_circle, inside_square)
            masks = torch.where(inside, kind, masks)
        brightness = torch.tensor([0.0, 1.0, 0.6])
        images = brightness[masks] + hp.noise * torch.randn(n, size, size, generator=generator)
        return images.unsqueeze(1), masks
