"""Tiny networks for the demo tasks: an MLP and a small U-Net."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class MLP(nn.Sequential):
    """Fully connected layers ``Linear -> LayerNorm -> ReLU -> Dropout``, one per hidden width.

    Args:
        in_features: input size.
        hidden: the hidden layers' widths; the output has ``hidden[-1]`` features.
        dropout: dropout probability after each layer.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], dropout: float = 0.0) -> None:
        widths = [in_features, *hidden]
        super().__init__(
            *(
                nn.Sequential(
                    nn.Linear(width_in, width_out),
                    nn.LayerNorm(width_out),
                    nn.ReLU(),
                    nn.Dropout(dropout),
                )
                for width_in, width_out in itertools.pairwise(widths)
            )
        )
        self.out_features = widths[-1]


class TinyUNet(nn.Module):
    """A two-level U-Net: per-pixel class scores ``(N, num_classes, H, W)``.

    Args:
        in_channels: input channels.
        num_classes: output channels (one score per class).
        width: channels of the first level; the second has twice as many.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: int = 16) -> None:
        super().__init__()
        self.encode1 = _conv_block(in_channels, width)
        self.encode2 = _conv_block(width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, kernel_size=2, stride=2)
        self.decode1 = _conv_block(2 * width, width)
        self.head = nn.Conv2d(width, num_classes, kernel_size=1)

    def forward(self, images: Tensor) -> Tensor:
        """Class scores for each pixel; H and W must be even."""
        skip = self.encode1(images)
        deep = self.encode2(nn.functional.max_pool2d(skip, 2))
        return self.head(self.decode1(torch.cat([skip, self.up(deep)], dim=1)))


def _conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
        nn.Conv2d(channels_out, channels_out, kernel_size=3, padding=1),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
    )
