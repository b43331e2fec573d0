r"""A two-task digits model: the digit's class and its ink mass, from one shared encoder.

The tasks differ in kind and in scale, which is what loss weighting is for: cross-entropy over
10 classes starts near :math:`\log 10 \approx 2.3`, while the squared error of the ink mass
(the sum of the 64 pixel values in ``[0, 1]``, about 15 to 45 inked pixels) starts in the
hundreds. With equal fixed weights the regression term dominates the shared encoder's
gradient at first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError
from torchmetrics.classification import MulticlassAccuracy

from lossplug.demo.models.nets import MLP
from lossplug.mixin import LossPlugMixin

#: the keys of the model's output and of the loss target.
DIGIT, INK, FEATURES = "digit", "ink", "features"


def ink_mass(inputs: Tensor) -> Tensor:
    """The ink of each flat image with pixels in ``[0, 1]``: the sum of its pixels, ``(N,)``."""
    return inputs.sum(dim=1)


class MultiTask(LossPlugMixin, pl.LightningModule):
    """Digit classification and ink-mass regression on one MLP encoder, two linear heads.

    ``forward`` returns ``{"digit": class scores (N, C), "ink": ink mass (N,), "features": the
    encoder's output (N, hidden[-1])}``; the batch's target becomes ``{"digit": labels,
    "ink": ink_mass(inputs)}``. A :class:`~lossplug.CompositeLoss` routes each term to its
    head (``conf/loss/multitask.yaml`` in the demo app); the shared features are there for
    weightings that work on the gradients of the shared representation. Logs the share of
    digits classified right as ``{stage}/acc`` and the ink's mean absolute error as
    ``{stage}/ink_mae``.

    Args:
        loss: the loss (config or object), see :class:`~lossplug.LossPlugMixin`.
        optimizer: the optimizer (config or factory).
        scheduler: the scheduler (config, factory or ``None``).
        in_features: input size.
        hidden: hidden widths of the shared encoder.
        num_classes: number of classes.
        dropout: dropout probability in the encoder.
        check_inputs: when input values are checked, see :class:`~lossplug.LossPlugMixin`.
        on_nonfinite: what a NaN or infinite loss does, see :class:`~lossplug.LossPlugMixin`.
        normalize_loss: the mean each micro-batch backpropagates, see
            :class:`~lossplug.LossPlugMixin`.
    """

    def __init__(
        self,
        loss: Any,
        optimizer: Any,
        scheduler: Any = None,
        in_features: int = 64,
        hidden: Sequence[int] = (128,),
        num_classes: int = 10,
        dropout: float = 0.0,
        check_inputs: str = "first",
        on_nonfinite: str = "raise",
        normalize_loss: str = "batch",
    ) -> None:
        super().__init__(
            loss=loss,
            optimizer=optimizer,
            scheduler=scheduler,
            check_inputs=check_inputs,
            on_nonfinite=on_nonfinite,
            normalize_loss=normalize_loss,
        )
        self.encoder = MLP(in_features, hidden, dropout)
        self.digit_head = nn.Linear(self.encoder.out_features, num_classes)
        self.ink_head = nn.Linear(self.encoder.out_features, 1)
        self.accuracy = nn.ModuleDict(
            {stage: MulticlassAccuracy(num_classes, average="micro") for stage in ("val", "test")}
        )
        self.ink_mae = nn.ModuleDict({stage: MeanAbsoluteError() for stage in ("val", "test")})

    def forward(self, inputs: Tensor) -> dict[str, Tensor]:
        """Class scores, ink mass and the shared features, by name."""
        features = self.encoder(inputs)
        return {
            DIGIT: self.digit_head(features),
            INK: self.ink_head(features).squeeze(-1),
            FEATURES: features,
        }

    def split_batch(self, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The images, and both tasks' targets computed from ``(images, labels)``."""
        inputs, labels = batch
        return inputs, {DIGIT: labels, INK: ink_mass(inputs)}

    def update_metrics(self, stage: str, output: Any, target: Any) -> None:
        """Accuracy and ink error of the evaluation stages (computed per epoch)."""
        if stage not in self.accuracy:
            return
        self.accuracy[stage].update(output[DIGIT], target[DIGIT])
        self.ink_mae[stage].update(output[INK], target[INK])
        self.log(f"{stage}/acc", self.accuracy[stage], on_epoch=True, prog_bar=stage == "val")
        self.log(f"{stage}/ink_mae", self.ink_mae[stage], on_epoch=True)
