"""Module wrappers over :mod:`lossplug.functional.metric_learning`."""

from __future__ import annotations

from torch import Tensor

from lossplug._validation import check_bool
from lossplug.functional import metric_learning as F
from lossplug.functional._distance import Distance
from lossplug.functional._gather import gather_batch
from lossplug.functional.metric_learning import Mining
from lossplug.losses.base import LossModule, MultiTermLoss
from lossplug.losses.temperature import LearnedTemperature, check_temperature_options
from lossplug.registry import register_loss


class _GlobalBatch:
    """``gather``: score the whole batch of every process (:mod:`lossplug.functional._gather`).

    The public entry points (``forward``, ``components``, ``measured_components``) gather
    once; what they call works on the batch they are given.
    """

    name: str
    gather: bool

    def _set_gather(self, gather: bool) -> None:
        self.gather = check_bool(self.name, "gather", gather)

    def _global_batch(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Every process's embeddings and labels with ``gather``; these ones otherwise."""
        return gather_batch(embeddings, labels) if self.gather else (embeddings, labels)


@register_loss("contrastive")
class ContrastiveLoss(_GlobalBatch, MultiTermLoss):
    """Contrastive loss over the pairs in the batch; see :func:`lossplug.functional.contrastive`.

    Called as ``loss(embeddings, labels)``; its components are ``pos`` (same-label pairs
    pulled within ``pos_margin``) and ``neg`` (other pairs pushed beyond ``neg_margin``).

    Args:
        pos_margin: >= 0.
        neg_margin: >= ``pos_margin``.
        distance: ``"euclidean"`` or ``"cosine"``.
        squared: halved squared hinges (Hadsell et al. 2006) or plain hinges (PML).
        reduction: ``"mean"`` (per-set means, added), ``"sum"`` or ``"none"`` (per pair).
        gather: under data parallelism, pair every sample with the samples of every process
            (their embeddings and labels gathered, with gradient): the loss and gradient of
            the global batch.

    Example:
        >>> import torch
        >>> from lossplug.losses import ContrastiveLoss
        >>> loss = ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
        >>> loss(torch.tensor([[0.0, 0.0], [0.0, 0.5], [3.0, 0.0]]), torch.tensor([0, 0, 1]))
        tensor(0.1250)
    """

    name = "contrastive"
    input_space = "embeddings"
    separate_counts = True  # positive and negative pairs
    repr_options = ("pos_margin", "neg_margin", "distance", "squared", "gather")

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: Distance = "euclidean",
        squared: bool = True,
        reduction: str = "mean",
        gather: bool = False,
    ) -> None:
        super().__init__(reduction)
        self._set_gather(gather)
        self.pos_margin, self.neg_margin = F.check_contrastive_options(
            pos_margin, neg_margin, distance, squared, reduction
        )
        self.distance = distance
        self.squared = squared

    def component_names(self) -> tuple[str, ...]:
        """``pos`` and ``neg``."""
        return ("pos", "neg")

    def measured_components(
        self, embeddings: Tensor, labels: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """``pos`` counted over the positive pairs of the batch, ``neg`` over the negative ones."""
        embeddings, labels = self._global_batch(embeddings, labels)
        components = self._components(embeddings, labels)
        pairs = labels.numel() * (labels.numel() - 1) // 2
        same = (labels[:, None] == labels[None, :]).sum()
        positive_pairs = (same - labels.numel()) // 2
        return components, {"pos": positive_pairs, "neg": pairs - positive_pairs}

    def components(self, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The ``pos`` and ``neg`` terms; the loss is their sum."""
        return self._components(*self._global_batch(embeddings, labels))

    def _components(self, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return F.contrastive_components(
            embeddings,
            labels,
            pos_margin=self.pos_margin,
            neg_margin=self.neg_margin,
            distance=self.distance,
            squared=self.squared,
            reduction=self.reduction,
        )


@register_loss("triplet")
class TripletLoss(_GlobalBatch, LossModule):
    """Triplet loss over triplets mined in the batch; see :func:`lossplug.functional.triplet`.

    Called as ``loss(embeddings, labels)``.

    Args:
        margin: >= 0.
        mining: ``"all"`` (every valid triplet) or ``"batch_hard"`` (hardest per anchor).
        distance: ``"euclidean"`` or ``"cosine"``.
        p: the norm's order for ``"euclidean"``, >= 1.
        reduction: ``"mean"`` (over active triplets), ``"sum"`` or ``"none"``.
        gather: under data parallelism, pair every sample with the samples of every process
            (their embeddings and labels gathered, with gradient): the loss and gradient of
            the global batch.

    Example:
        >>> import torch
        >>> from lossplug.losses import TripletLoss
        >>> loss = TripletLoss(margin=0.5)
        >>> loss(torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 1.2]]), torch.tensor([0, 0, 1]))
        tensor(0.8000)
    """

    name = "triplet"
    input_space = "embeddings"
    repr_options = ("margin", "mining", "distance", "p", "gather")

    def __init__(
        self,
        margin: float = 0.2,
        mining: Mining = "all",
        distance: Distance = "euclidean",
        p: float = 2.0,
        reduction: str = "mean",
        gather: bool = False,
    ) -> None:
        super().__init__(reduction)
        self._set_gather(gather)
        self.margin, self.p = F.check_triplet_options(margin, mining, distance, p, reduction)
        self.mining = mining
        self.distance = distance

    def measured_components(
        self, embeddings: Tensor, labels: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """The loss, counted over the batch's active triplets (0 when none is active)."""
        embeddings, labels = self._global_batch(embeddings, labels)
        if self.reduction != "mean":
            loss = self._triplet(embeddings, labels)
            return {self.name: loss}, {self.name: len(labels)}
        total, active = F.triplet_total_and_count(embeddings, labels, **self._mining_options())
        return {self.name: total / active.clamp_min(1).to(total.dtype)}, {self.name: active}

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of the batch's triplets."""
        return self._triplet(*self._global_batch(embeddings, labels))

    def _triplet(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return F.triplet(embeddings, labels, reduction=self.reduction, **self._mining_options())

    def _mining_options(self) -> dict[str, object]:
        """How triplets are formed and scored: the functional's keyword options."""
        return {
            "margin": self.margin,
            "mining": self.mining,
            "distance": self.distance,
            "p": self.p,
        }


class _TemperatureScaledLoss(_GlobalBatch, MultiTermLoss):
    """The ``pos`` and ``neg`` terms over cosine similarities divided by a temperature.

    Subclasses give :meth:`_components` (their functional's) and :meth:`mean_count` (the
    pairs or anchors its mean runs over).

    Args:
        temperature: > 0; with ``learn_temperature``, the initial value (>= 0.01).
        learn_temperature: train the temperature with the model (:class:`LearnedTemperature`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        gather: under data parallelism, pair every sample with the samples of every process
            (their embeddings and labels gathered, with gradient): the loss and gradient of
            the global batch.
    """

    input_space = "embeddings"
    repr_options = ("temperature", "learn_temperature", "gather")

    def __init__(
        self, temperature: float, learn_temperature: bool, reduction: str, gather: bool
    ) -> None:
        super().__init__(reduction)
        self._set_gather(gather)
        self.temperature = check_temperature_options(self.name, temperature, learn_temperature)
        self.learn_temperature = learn_temperature
        self.learned_temperature = LearnedTemperature(temperature) if learn_temperature else None

    def current_temperature(self) -> float | Tensor:
        """The temperature the next call divides by: the option, or the learned tensor."""
        if self.learned_temperature is None:
            return self.temperature
        return self.learned_temperature()

    def component_names(self) -> tuple[str, ...]:
        """``pos`` and ``neg``."""
        return ("pos", "neg")

    def mean_count(self, labels: Tensor) -> Tensor:
        """How many pairs or anchors of the batch the mean runs over."""
        raise NotImplementedError

    def measured_components(
        self, embeddings: Tensor, labels: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """Both terms, counted over the pairs or anchors the mean runs over (0 when none)."""
        embeddings, labels = self._global_batch(embeddings, labels)
        count = self.mean_count(labels)
        return self._components(embeddings, labels), {"pos": count, "neg": count}

    def components(self, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The ``pos`` and ``neg`` terms; the loss is their sum."""
        return self._components(*self._global_batch(embeddings, labels))

    def _components(self, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The terms of the batch given (gathered already where ``gather`` is on)."""
        raise NotImplementedError


@register_loss("infonce")
class InfoNCELoss(_TemperatureScaledLoss):
    """InfoNCE / NT-Xent over the batch's positive pairs; see :func:`lossplug.functional.infonce`.

    Called as ``loss(embeddings, labels)``, samples of one label being positives (the views of
    one image in SimCLR); as pytorch-metric-learning's ``NTXentLoss``. Its components are
    ``pos``, the positive pair's scaled similarity negated, and ``neg``, the log-sum-exp over
    the positive and the anchor's negatives; per pair and in every reduction the loss is
    ``pos + neg``. A learned temperature is clipped at 0.01 as in CLIP
    (:class:`~lossplug.losses.temperature.LearnedTemperature`).

    Args:
        temperature: > 0 (SimCLR: 0.1 to 0.5; CLIP's initial value: 0.07).
        learn_temperature: learn it, starting from ``temperature`` (>= 0.01).
        reduction: ``"mean"`` over the positive pairs, ``"sum"`` or ``"none"`` (per pair).
        gather: under data parallelism, pair every sample with the samples of every process
            (their embeddings and labels gathered, with gradient): the loss and gradient of
            the global batch.

    Example:
        >>> import torch
        >>> from lossplug.losses import InfoNCELoss
        >>> loss = InfoNCELoss(temperature=0.5)
        >>> views = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> loss.components(views, torch.tensor([0, 0, 1, 1]))
        {'pos': tensor(-1.9901), 'neg': tensor(2.2800)}
    """

    name = "infonce"

    def __init__(
        self,
        temperature: float = 0.07,
        learn_temperature: bool = False,
        reduction: str = "mean",
        gather: bool = False,
    ) -> None:
        super().__init__(temperature, learn_temperature, reduction, gather)

    def _components(self, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return F.infonce_components(
            embeddings, labels, temperature=self.current_temperature(), reduction=self.reduction
        )

    def mean_count(self, labels: Tensor) -> Tensor:
        """The positive pairs whose anchor has a negative."""
        return F.infonce_pair_count(labels)


@register_loss("supcon")
class SupConLoss(_TemperatureScaledLoss):
    """Supervised contrastive loss over the anchors; see :func:`lossplug.functional.supcon`.

    Called as ``loss(embeddings, labels)``; the L_out form of Khosla et al. (2020), as
    pytorch-metric-learning's ``SupConLoss``. Its components are ``pos``, an anchor's mean
    scaled similarity to its positives negated, and ``neg``, the log-sum-exp over all other
    samples; per anchor and in every reduction the loss is ``pos + neg``.

    Args:
        temperature: > 0 (the paper's: 0.1).
        learn_temperature: learn it, starting from ``temperature`` (>= 0.01).
        reduction: ``"mean"`` over the anchors with a positive and a negative, ``"sum"`` or
            ``"none"`` (per anchor).
        gather: under data parallelism, pair every sample with the samples of every process
            (their embeddings and labels gathered, with gradient): the loss and gradient of
            the global batch.

    Example:
        >>> import torch
        >>> from lossplug.losses import SupConLoss
        >>> loss = SupConLoss(temperature=0.5)
        >>> emb = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.9, 0.0], [0.0, 1.0]])
        >>> loss(emb, torch.tensor([0, 0, 0, 1]))
        tensor(0.7637)
    """

    name = "supcon"

    def __init__(
        self,
        temperature: float = 0.1,
        learn_temperature: bool = False,
        reduction: str = "mean",
        gather: bool = False,
    ) -> None:
        super().__init__(temperature, learn_temperature, reduction, gather)

    def _components(self, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return F.supcon_components(
            embeddings, labels, temperature=self.current_temperature(), reduction=self.reduction
        )

    def mean_count(self, labels: Tensor) -> Tensor:
        """The anchors that have a positive and a negative."""
        return F.supcon_anchor_count(labels)
