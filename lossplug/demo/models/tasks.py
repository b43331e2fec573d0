"""Demo LightningModules, one per task, each built on :class:`~lossplug.LossPlugMixin`.

They give every loss of the catalogue something to learn: digit classification, shape
segmentation, diabetes regression and digit embeddings. Each logs one quality metric for
validation and test as ``{stage}/{metric_name}``. Every task takes the mixin's own options,
``check_inputs``, ``on_nonfinite`` and ``normalize_loss``, as keywords and hands them on unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, R2Score
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from lossplug._validation import check_choice
from lossplug.demo.models.knn import KNNAccuracy
from lossplug.demo.models.nets import MLP, TinyUNet
from lossplug.losses import QuantileLoss
from lossplug.mixin import LossPlugMixin

TARGET_FORMATS = ("index", "one_hot")


def to_input_space(logits: Tensor, space: str) -> Tensor:
    """Class scores turned into what a loss expects (``criterion.input_space``), along dim 1."""
    if space == "log_probs":
        return logits.log_softmax(dim=1)
    if space == "probs":
        return logits.softmax(dim=1)
    return logits


class _DemoTask(LossPlugMixin, pl.LightningModule):
    """One quality metric per evaluation stage, logged as ``{stage}/{metric_name}``."""

    metric_name: ClassVar[str]

    def track(self, metric: Callable[[], Metric]) -> None:
        """Create the validation and test instances of ``metric``."""
        self.stage_metrics = nn.ModuleDict({stage: metric() for stage in ("val", "test")})

    def update_metrics(self, stage: str, output: Tensor, target: Tensor) -> None:
        """Update this stage's metric with the batch and log it (computed per epoch)."""
        if stage not in self.stage_metrics:
            return
        metric = self.stage_metrics[stage]
        metric.update(output, target)
        self.log(f"{stage}/{self.metric_name}", metric, on_epoch=True, prog_bar=stage == "val")


class _ClassScoreTask(_DemoTask):
    """A model of class scores ``(N, C, *)`` trained on class-index targets ``(N, *)``.

    The scores are converted to the criterion's input space (log-softmax for a loss on
    log-probabilities, softmax for one on probabilities); with ``target_format="one_hot"``
    the targets become one-hot ``(N, C, *)`` floats, as BCE and KL divergence need.
    """

    def __init__(
        self,
        loss: Any,
        optimizer: Any,
        scheduler: Any,
        target_format: str,
        check_inputs: str,
        on_nonfinite: str,
        normalize_loss: str,
    ) -> None:
        super().__init__(
            loss=loss,
            optimizer=optimizer,
            scheduler=scheduler,
            check_inputs=check_inputs,
            on_nonfinite=on_nonfinite,
            normalize_loss=normalize_loss,
        )
        check_choice(type(self).__name__, "target_format", target_format, TARGET_FORMATS)
        self.target_format = target_format

    def loss_inputs(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Scores in the criterion's input space, and targets in ``target_format``."""
        pred = to_input_space(output, self.criterion.input_space)
        if self.target_format == "one_hot":
            target = F.one_hot(target, output.shape[1]).movedim(-1, 1).to(pred.dtype)
        return pred, target


class Classifier(_ClassScoreTask):
    """An MLP classifier (``backbone`` then ``head``); logs accuracy as ``{stage}/acc``.

    Args:
        loss: the loss (config or object), see :class:`~lossplug.LossPlugMixin`.
        optimizer: the optimizer (config or factory).
        scheduler: the scheduler (config, factory or ``None``).
        in_features: input size.
        hidden: hidden widths of the backbone.
        num_classes: number of classes.
        dropout: dropout probability in the backbone.
        target_format: ``"index"`` or ``"one_hot"`` targets for the loss.
        check_inputs: when input values are checked, see :class:`~lossplug.LossPlugMixin`.
        on_nonfinite: what a NaN or infinite loss does, see :class:`~lossplug.LossPlugMixin`.
        normalize_loss: the mean each micro-batch backpropagates, see
            :class:`~lossplug.LossPlugMixin`.
    """

    metric_name = "acc"

    def __init__(
        self,
        loss: Any,
        optimizer: Any,
        scheduler: Any = None,
        in_features: int = 64,
        hidden: Sequence[int] = (256,),
        num_classes: int = 10,
        dropout: float = 0.1,
        target_format: str = "index",
        check_inputs: str = "first",
        on_nonfinite: str = "raise",
        normalize_loss: str = "batch",
    ) -> None:
        super().__init__(
            loss, optimizer, scheduler, target_format, check_inputs, on_nonfinite, normalize_loss
        )
        self.backbone = MLP(in_features, hidden, dropout)
        self.head = nn.Linear(self.backbone.out_features, num_classes)
        self.track(lambda: MulticlassAccuracy(num_classes))

    def forward(self, inputs: Tensor) -> Tensor:
        """Class scores ``(N, num_classes)``."""
        return self.head(self.backbone(inputs))


class Segmenter(_ClassScoreTask):
    """A small U-Net for semantic segmentation; logs mean IoU as ``{stage}/miou``.

    Args:
        loss: the loss (config or object), see :class:`~lossplug.LossPlugMixin`.
        optimizer: the optimizer (config or factory).
        scheduler: the scheduler (config, factory or ``None``).
        in_channels: image channels.
        num_classes: number of classes, background included.
        width: channels of the U-Net's first level.
        target_format: ``"index"`` or ``"one_hot"`` targets for the loss.
        check_inputs: when input values are checked, see :class:`~lossplug.LossPlugMixin`.
        on_nonfinite: what a NaN or infinite loss does, see :class:`~lossplug.LossPlugMixin`.
        normalize_loss: the mean each micro-batch backpropagates, see
            :class:`~lossplug.LossPlugMixin`.
    """

    metric_name = "miou"

    def __init__(
        self,
        loss: Any,
        optimizer: Any,
        scheduler: Any = None,
        in_channels: int = 1,
        num_classes: int = 3,
        width: int = 16,
        target_format: str = "index",
        check_inputs: str = "first",
        on_nonfinite: str = "raise",
        normalize_loss: str = "batch",
    ) -> None:
        super().__init__(
            loss, optimizer, scheduler, target_format, check_inputs, on_nonfinite, normalize_loss
        )
        self.net = TinyUNet(in_channels, num_classes, width)
        self.track(lambda: MulticlassJaccardIndex(num_classes))

    def forward(self, images: Tensor) -> Tensor:
        """Per-pixel class scores ``(N, num_classes, H, W)``."""
        return self.net(images)


class Regressor(_DemoTask):
    """An MLP regressor of one target; logs the coefficient of determination as ``{stage}/r2``.

    With a :class:`~lossplug.losses.QuantileLoss` it predicts one column per quantile level,
    ``(N, Q)``, and ``r2`` scores the column of the level nearest the median (0.5 itself when
    it is among the levels; the lower of two levels equally near): a model's point forecast.

    Args:
        loss: the loss (config or object), see :class:`~lossplug.LossPlugMixin`.
        optimizer: the optimizer (config or factory).
        scheduler: the scheduler (config, factory or ``None``).
        in_features: input size.
        hidden: hidden widths.
        dropout: dropout probability.
        check_inputs: when input values are checked, see :class:`~lossplug.LossPlugMixin`.
        on_nonfinite: what a NaN or infinite loss does, see :class:`~lossplug.LossPlugMixin`.
        normalize_loss: the mean each micro-batch backpropagates, see
            :class:`~lossplug.LossPlugMixin`.
    """

    metric_name = "r2"

    def __init__(
        self,
        loss: Any,
        optimizer: Any,
        scheduler: Any = None,
        in_features: int = 10,
        hidden: Sequence[int] = (64,),
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
        levels = self.criterion.quantiles if isinstance(self.criterion, QuantileLoss) else ()
        #: the column ``r2`` scores, or ``None`` for a single output ``(N,)``
        self.point_column = median_column(levels) if levels else None
        self.backbone = MLP(in_features, hidden, dropout)
        self.head = nn.Linear(self.backbone.out_features, len(levels) or 1)
        self.track(R2Score)

    def forward(self, inputs: Tensor) -> Tensor:
        """Predictions ``(N,)``, or ``(N, Q)`` for a quantile loss's ``Q`` levels."""
        output = self.head(self.backbone(inputs))
        return output.squeeze(-1) if self.point_column is None else output

    def update_metrics(self, stage: str, output: Tensor, target: Tensor) -> None:
        """``r2`` of the predictions, or of the column nearest the median."""
        point = output if self.point_column is None else output[:, self.point_column]
        super().update_metrics(stage, point, target)


def median_column(levels: Sequence[float]) -> int:
    """The index of the level nearest 0.5.

    Of two levels equally near as written (0.3 and 0.7), the lower one's.
    """
    distances = [abs(Decimal(str(level)) - Decimal("0.5")) for level in levels]
    return min(range(len(levels)), key=lambda k: (distances[k], levels[k]))


class Embedder(_DemoTask):
    """An MLP embedding net for metric learning; logs 1-NN accuracy as ``{stage}/knn_acc``.

    Args:
        loss: a metric-learning loss taking ``(embeddings, labels)``.
        optimizer: the optimizer (config or factory).
        scheduler: the scheduler (config, factory or ``None``).
        in_features: input size.
        hidden: hidden widths.
        embedding_dim: size of the embeddings.
        normalize: whether embeddings are scaled to unit length.
        check_inputs: when input values are checked, see :class:`~lossplug.LossPlugMixin`.
        on_nonfinite: what a NaN or infinite loss does, see :class:`~lossplug.LossPlugMixin`.
        normalize_loss: the mean each micro-batch backpropagates, see
            :class:`~lossplug.LossPlugMixin`.
    """

    metric_name = "knn_acc"

    def __init__(
        self,
        loss: Any,
        optimizer: Any,
        scheduler: Any = None,
        in_features: int = 64,
        hidden: Sequence[int] = (128,),
        embedding_dim: int = 32,
        normalize: bool = True,
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
        self.backbone = MLP(in_features, hidden)
        self.head = nn.Linear(self.backbone.out_features, embedding_dim)
        self.normalize = normalize
        self.track(KNNAccuracy)

    def forward(self, inputs: Tensor) -> Tensor:
        """Embeddings ``(N, embedding_dim)``."""
        embeddings = self.head(self.backbone(inputs))
        return F.normalize(embeddings, dim=1) if self.normalize else embeddings
