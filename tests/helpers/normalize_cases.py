"""The data and model of the ``normalize_loss="global"`` test (tests/lightning/test_normalize.py),
shared by the 2-process job (tests/jobs/normalize_job.py) and the reference in one process.

Each of the 2 ranks trains one optimizer step of 3 micro-batches (``accumulate_grad_batches=3``)
with uneven numbers of ignored targets, in float64, with SGD. Two shardings:

- ``sampler``: Lightning's defaults, its ``DistributedSampler`` over one dataset of 29 samples
  in batches of 5, laid out as torch's sampler does in epoch 0 (Lightning shuffles a
  training loader, with the seed of ``seed_everything``, which the job sets to :data:`SEED`;
  :func:`ddp_cpu.sampler_indices`): 29 indices padded to 30 with the permutation's first
  index again; rank 1's last micro-batch ends on that repeat, which the step trains on too.
- ``own``: each rank its own micro-batches of uneven sizes (6, 4, 5 and 3, 7, 2), no
  distributed sampler.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from ddp_cpu import sampler_indices
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lossplug import LossPlugMixin
from lossplug.losses import CrossEntropyLoss

LR = 0.5
IGNORE = -100
SHARDINGS = ("sampler", "own")
#: ``own``: each rank's micro-batches as (size, ignored targets)
OWN_MICRO_BATCHES = (((6, 0), (4, 3), (5, 1)), ((3, 2), (7, 0), (2, 1)))
#: ``sampler``: the dataset's size and the loader's batch size
SAMPLES, BATCH = 29, 5
#: the job's ``seed_everything``, which seeds Lightning's distributed sampler
SEED = 7


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """The ``sampler`` sharding's dataset; targets ignored unevenly (every 3rd, and 8 to 12)."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(SAMPLES, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (SAMPLES,), generator=generator)
    y[::3] = IGNORE
    y[8:13] = IGNORE
    return x, y


def micro_batches(sharding: str, rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
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

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches[index]


def initial_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(5, 3).double()


class Model(LossPlugMixin, L.LightningModule):
    def __init__(self, normalize_loss: str, sharding: str = "sampler") -> None:
        super().__init__(
            loss=CrossEntropyLoss(ignore_index=IGNORE),
            optimizer=lambda params: torch.optim.SGD(params, lr=LR),
            normalize_loss=normalize_loss,
        )
        self.net = initial_net()
        self.sharding = sharding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train_dataloader(self) -> DataLoader:
        if self.sharding == "sampler":  # Lightning adds its DistributedSampler
            return DataLoader(TensorDataset(*dataset()), batch_size=BATCH)
        return DataLoader(Batches(micro_batches("own", self.global_rank)), batch_size=None)


def _step(loss_of: callable) -> dict[str, list[float]]:
    """The parameters after one SGD step on ``loss_of(net)``."""
    net = initial_net()
    loss_of(net).backward()
    with torch.no_grad():
        return {name: (p - LR * p.grad).flatten().tolist() for name, p in net.named_parameters()}


def reference_update(sharding: str) -> dict[str, list[float]]:
    """One SGD step on the mean cross-entropy over every kept target of both ranks' step."""
    batches = [batch for rank in (0, 1) for batch in micro_batches(sharding, rank)]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    kept = y != IGNORE

    def mean_over_kept(net: nn.Module) -> torch.Tensor:
        # written out: -log softmax at the target, summed over kept targets, / their count
        logits = net(x)
        return -(logits[kept].log_softmax(dim=1).gather(1, y[kept, None])).sum() / kept.sum()

    return _step(mean_over_kept)


def naive_update(sharding: str) -> dict[str, list[float]]:
    """The step every trainer takes by default: the mean of the micro-batches' means."""
    batches = [batch for rank in (0, 1) for batch in micro_batches(sharding, rank)]

    def mean_of_means(net: nn.Module) -> torch.Tensor:
        means = [F.cross_entropy(net(x), y, ignore_index=IGNORE) for x, y in batches]
        return torch.stack(means).mean()

    return _step(mean_of_means)
