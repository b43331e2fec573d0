"""Where a DistributedSampler's repeated samples lie, checked against the sampler itself."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset

from lossplug.padding import UnknownBatchSizeError, padded_epoch, take_rows


def _loader(size: int, replicas: int, rank: int, shuffle: bool, batch_size: int = 3):
    data = TensorDataset(torch.arange(size))
    sampler = DistributedSampler(data, replicas, rank, shuffle=shuffle, seed=size)
    return DataLoader(data, batch_size=batch_size, sampler=sampler)


def _first_occurrences(size: int, replicas: int, shuffle: bool) -> list[list[bool]]:
    """Per rank, whether each of its samples is the first time the epoch shows that index.

    The epoch's order interleaves the ranks (place p is rank p % W's (p // W)-th sample).
    """
    lists = [list(_loader(size, replicas, rank, shuffle).sampler) for rank in range(replicas)]
    seen: set[int] = set()
    first = [[False] * len(lists[0]) for _ in range(replicas)]
    for place in range(replicas * len(lists[0])):
        rank, local = place % replicas, place // replicas
        index = lists[rank][local]
        first[rank][local] = index not in seen
        seen.add(index)
    return first


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("replicas", [2, 3, 4])
@pytest.mark.parametrize("size", [1, 5, 10, 11, 101])
def test_the_real_rows_are_each_sample_s_first_occurrence(size, replicas, shuffle):
    first = _first_occurrences(size, replicas, shuffle)
    assert sum(map(sum, first)) == size  # every sample once
    for rank in range(replicas):
        loader = _loader(size, replicas, rank, shuffle)
        padded = padded_epoch(loader)
        if all(first[rank]) and size % replicas == 0:
            assert padded is None
            continue
        rows = []
        for batch_idx, (batch,) in enumerate(loader):
            real = len(batch) if padded is None else padded.real_rows(batch_idx, len(batch))
            rows += [True] * real + [False] * (len(batch) - real)
        assert rows == first[rank]


def test_a_sampler_that_does_not_pad_needs_nothing():
    data = TensorDataset(torch.arange(11))
    even = DistributedSampler(data, 2, 0, drop_last=True)
    assert padded_epoch(DataLoader(data, batch_size=3, sampler=even)) is None
    assert padded_epoch(DataLoader(data, batch_size=3)) is None
    assert padded_epoch([1, 2, 3]) is None


class _Pairs(Sampler[list[int]]):
    """Batches of two indices, with no batch_size attribute."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler

    def __iter__(self):
        indices = list(self.sampler)
        return iter([indices[k : k + 2] for k in range(0, len(indices), 2)])

    def __len__(self) -> int:
        return (len(self.sampler) + 1) // 2


def test_a_padding_sampler_under_batches_of_unknown_size_is_refused_with_the_fix():
    data = TensorDataset(torch.arange(11))
    loader = DataLoader(data, batch_sampler=_Pairs(DistributedSampler(data, 2, 1)))
    with pytest.raises(UnknownBatchSizeError, match=r"pads 11 samples to 12.*Fix: give the"):
        padded_epoch(loader)


def test_take_rows_follows_dicts_tuples_and_named_tuples():
    Out = namedtuple("Out", "logits aux")
    value = {
        "a": torch.arange(6).reshape(3, 2),
        "b": (torch.arange(3), [torch.tensor(5.0), "text"]),
        "c": Out(torch.arange(3), torch.ones(3, 1)),
    }
    cut = take_rows(value, 2)
    assert cut["a"].tolist() == [[0, 1], [2, 3]]
    assert cut["b"][0].tolist() == [0, 1] and isinstance(cut["b"], tuple)
    assert cut["b"][1][0].item() == 5.0 and cut["b"][1][1] == "text"  # 0-d and non-tensors
    assert isinstance(cut["c"], Out) and cut["c"].aux.shape == (2, 1)
