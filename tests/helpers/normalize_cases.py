"""The data, models and references of the ``normalize_loss="global"`` tests
(tests/lightning/test_normalize.py), shared by the 2-process job (tests/jobs/normalize_job.py)
and the references computed in one process.

Each of the 2 ranks trains one optimizer step of 3 micro-batches (``accumulate_grad_batches=3``)
with uneven numbers of ignored targets, in float64, with SGD. Two shardings:

- ``sampler``: Lightning's defaults, its ``DistributedSampler`` over one dataset of 29 samples
  in batches of 5, laid out as torch's sampler does in epoch 0 (Lightning shuffles a
  training loader, with the seed of ``seed_everything``, which the job sets to :data:`SEED`;
  :func:`ddp_cpu.sampler_indices`): 29 indices padded to 30 with the permutation's first
  index again; rank 1's last micro-batch ends on that repeat, which the step trains on too.
- ``own``: each rank its own micro-batches of uneven sizes (6, 4, 5 and 3, 7, 2), no
  distributed sampler.

Three losses (:data:`CASES`), each with its reference written out from its formula:

- ``cross_entropy`` (``ignore_index``): one count, the kept targets.
- ``contrastive``: ``pos`` counted over the positive pairs of a micro-batch, ``neg`` over the
  negative ones (the labels, ``-100`` included, pair the samples).
- ``composite``: cross-entropy (kept targets) plus a model term counted over every sample,
  weighted by learned uncertainty (its log-variances trained too, its regulariser added).
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from ddp_cpu import sampler_indices
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lossplug import CompositeLoss, LossPlugMixin
from lossplug.losses import ContrastiveLoss, CrossEntropyLoss, LossModule

LR = 0.5
IGNORE = -100
SHARDINGS = ("sampler", "own")
CASES = ("cross_entropy", "contrastive", "composite")
#: the composite's weight of its model term ``reg``
REG_WEIGHT = 0.5
#: ``own``: each rank's micro-batches as (size, ignored targets)
OWN_MICRO_BATCHES = (((6, 0), (4, 3), (5, 1)), ((3, 2), (7, 0), (2, 1)))
#: ``sampler``: the dataset's size and the loader's batch size
SAMPLES, BATCH = 29, 5
#: the job's ``seed_everything``, which seeds Lightning's distributed sampler
SEED = 7

Batch = tuple[torch.Tensor, torch.Tensor]


def dataset() -> Batch:
    """The ``sampler`` sharding's dataset; targets ignored unevenly (every 3rd, and 8 to 12)."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(SAMPLES, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (SAMPLES,), generator=generator)
    y[::3] = IGNORE
    y[8:13] = IGNORE
    return x, y


def micro_batches(sharding: str, rank: int) -> list[Batch]:
    """Rank ``rank``'s micro-batches of the step, in order: inputs (float64) and targets."""
    if sharding == "sampler":
        x, y = dataset()
        mine = torch.tensor(sampler_indices(SAMPLES, SEED, rank))
        return [(x[part], y[part]) for part in mine.split(BATCH)]
    generator = torch.Generator().manual_seed(rank)
    batches = []
    for size, ignored in OWN_MICRO_BATCHES[rank]:
        x = torch.randn(size, 5, generator=generator, dtype=torch.float64)
        y = torch.randint(0, 3, (size,), generator=generator)
        y[:ignored] = IGNORE
        batches.append((x, y))
    return batches


class Batches(Dataset):
    """Yields whole micro-batches (the loader's ``batch_size=None``)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Batch:
        return self.batches[index]


def initial_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(5, 3).double()


def criterion(case: str) -> LossModule:
    """The case's loss."""
    if case == "contrastive":
        return ContrastiveLoss()
    if case == "composite":
        return CompositeLoss(
            {"ce": CrossEntropyLoss(ignore_index=IGNORE)},
            weights={"ce": 1.0, "reg": REG_WEIGHT},
            weighting="uncertainty",
            model_terms=["reg"],
        )
    return CrossEntropyLoss(ignore_index=IGNORE)


def penalty(logits: torch.Tensor) -> torch.Tensor:
    """The composite's model term: each sample's mean squared logit, ``(B,)``."""
    return logits.square().mean(dim=1)


class Model(LossPlugMixin, L.LightningModule):
    """The linear model of a case; ``floats``: its parameters' and inputs' dtype."""

    def __init__(
        self,
        normalize_loss: str,
        sharding: str = "sampler",
        case: str = "cross_entropy",
        floats: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(
            loss=criterion(case),
            optimizer=lambda params: torch.optim.SGD(params, lr=LR),
            normalize_loss=normalize_loss,
        )
        self.net = initial_net().to(floats)
        self.sharding = sharding
        self.case = case
        self.floats = floats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def model_terms(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"reg": penalty(output)} if self.case == "composite" else {}

    def train_dataloader(self) -> DataLoader:
        if self.sharding == "sampler":  # Lightning adds its DistributedSampler
            return DataLoader(TensorDataset(*dataset()), batch_size=BATCH)
        batches = [(x.to(self.floats), y) for x, y in micro_batches("own", self.global_rank)]
        return DataLoader(Batches(batches), batch_size=None)


def trained(model: Model) -> dict[str, list[float]]:
    """The model's parameters (the criterion's learned ones too), by name."""
    return {name: p.detach().flatten().tolist() for name, p in model.named_parameters()}


# -- references, from the formulas ----------------------------------------------------------


def pair_losses(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Contrastive's halved squared hinges (margins 0 and 1) of the pairs ``i < j`` of a batch:
    the positive pairs' values, then the negative pairs'."""
    first, second = torch.triu_indices(len(labels), len(labels), offset=1)
    distance = (embeddings[first] - embeddings[second]).norm(dim=1)
    same = labels[first] == labels[second]
    return 0.5 * distance[same].square(), 0.5 * (1 - distance[~same]).clamp_min(0).square()


def global_loss(case: str, params: dict[str, torch.Tensor], batches: list[Batch]) -> torch.Tensor:
    """The loss over ``batches`` as one: each component's summed item losses over its count."""
    weight, bias = params["net.weight"], params["net.bias"]
    # under autocast the layer's output is 16-bit; the losses compute at least in float32
    outputs = [F.linear(x, weight, bias).to(weight.dtype) for x, _ in batches]
    labels = [y for _, y in batches]
    if case == "contrastive":
        pos, neg = zip(*map(pair_losses, outputs, labels), strict=True)
        return sum(_mean(torch.cat(values)) for values in (pos, neg))
    logits, y = torch.cat(outputs), torch.cat(labels)
    kept = y != IGNORE
    # -log softmax at the target, summed over the kept targets, over their count
    ce = -(logits[kept].log_softmax(dim=1).gather(1, y[kept, None])).sum() / kept.sum()
    if case == "cross_entropy":
        return ce
    reg = penalty(logits).sum() / len(y)
    s = params["criterion.learned.log_variances"]  # uncertainty: 0.5 e^{-s_i} w_i L_i + s_i / 2
    return 0.5 * (torch.exp(-s[0]) * ce + torch.exp(-s[1]) * REG_WEIGHT * reg + s.sum())


def _mean(values: torch.Tensor) -> torch.Tensor:
    return values.sum() / len(values) if len(values) else values.sum()


def _step(
    case: str, loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor], dtype: torch.dtype
) -> dict[str, list[float]]:
    """The parameters after one SGD step on ``loss_of(params)``, from the initial ones."""
    net = initial_net().to(dtype)
    params = {f"net.{name}": p for name, p in net.named_parameters()}
    if case == "composite":
        params["criterion.learned.log_variances"] = torch.zeros(2, dtype=dtype)
        params["criterion.learned.log_variances"].requires_grad_(True)
    grads = torch.autograd.grad(loss_of(params), list(params.values()))
    with torch.no_grad():
        return {
            name: (p - LR * grad).flatten().tolist()
            for (name, p), grad in zip(params.items(), grads, strict=True)
        }


def step_batches(sharding: str, ranks: tuple[int, ...] = (0, 1)) -> list[Batch]:
    """Every micro-batch of the step of ``ranks``."""
    return [batch for rank in ranks for batch in micro_batches(sharding, rank)]


def reference_update(case: str, batches: list[Batch]) -> dict[str, list[float]]:
    """One SGD step on the loss of every item of ``batches`` as one batch."""
    return _step(case, lambda params: global_loss(case, params, batches), batches[0][0].dtype)


def naive_update(case: str, batches: list[Batch]) -> dict[str, list[float]]:
    """The step every trainer takes by default: the mean of the micro-batches' own losses."""
    return _step(
        case,
        lambda params: sum(global_loss(case, params, [b]) for b in batches) / len(batches),
        batches[0][0].dtype,
    )
