"""``normalize_loss="global"``: the gradient of the mean over the whole optimizer step.

Two real processes over gloo, ``accumulate_grad_batches=3``, micro-batches with uneven numbers
of ignored targets, float64 (tests/jobs/normalize_job.py), with Lightning's distributed sampler
on (its repeat of sample 0 included) and with each rank's own micro-batches of uneven sizes:
one SGD step must land where one process's step on the mean over every kept target of the 6
micro-batches lands (written out in tests/helpers/normalize_cases.py), to 1e-6. The default,
``normalize_loss="batch"``, lands where the mean of the micro-batches' means does.
"""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from conftest import JOBS, quiet_trainer, run_python
from normalize_cases import SHARDINGS, Model, naive_update, reference_update
from torch.utils.data import DataLoader, TensorDataset

from lossplug import LossPlugMixin
from lossplug.losses import ContrastiveLoss
from lossplug.normalize import GlobalNormalizer


def two_processes(tmp_path, normalize: str, sharding: str) -> dict[str, list[float]]:
    job = (JOBS / "normalize_job.py", tmp_path, normalize, sharding)
    result = run_python(*job, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads((tmp_path / "params.json").read_text())


def assert_params(got: dict[str, list[float]], expected: dict[str, list[float]]) -> None:
    assert got.keys() == expected.keys() == {"weight", "bias"}
    for name, values in got.items():
        assert values == pytest.approx(expected[name], abs=1e-6), name


@pytest.mark.slow
@pytest.mark.parametrize("sharding", SHARDINGS)
def test_global_gives_the_step_of_the_mean_over_every_process_and_micro_batch(tmp_path, sharding):
    assert_params(two_processes(tmp_path, "global", sharding), reference_update(sharding))


@pytest.mark.slow
@pytest.mark.parametrize("sharding", SHARDINGS)
def test_batch_gives_the_mean_of_the_micro_batch_means(tmp_path, sharding):
    got = two_processes(tmp_path, "batch", sharding)
    assert_params(got, naive_update(sharding))
    reference = reference_update(sharding)  # the two differ here, so the test above can fail
    assert got["weight"] != pytest.approx(reference["weight"], abs=1e-4)


def test_one_process_without_accumulation_is_unchanged():
    model = Model("global")
    trainer = quiet_trainer(max_steps=1, precision="64-true", accumulate_grad_batches=1)
    loader = model.train_dataloader()
    x, y = next(iter(loader))
    expected = Model("batch")
    expected_trainer = quiet_trainer(max_steps=1, precision="64-true")
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=len(y)))
    expected_trainer.fit(expected, DataLoader(TensorDataset(x, y), batch_size=len(y)))
    torch.testing.assert_close(model.net.weight, expected.net.weight, rtol=1e-12, atol=1e-12)


class Pairs(LossPlugMixin, L.LightningModule):
    def __init__(self) -> None:
        optimizer = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731
        super().__init__(loss=ContrastiveLoss(), optimizer=optimizer, normalize_loss="global")
        self.net = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_components_counted_over_different_items_are_refused():
    data = TensorDataset(torch.randn(6, 2), torch.tensor([0, 0, 1, 1, 2, 2]))
    message = r"normalize_loss='global'.*contrastive's.*pos: 3, neg: 12"
    with pytest.raises(ValueError, match=message):
        quiet_trainer(max_steps=1).fit(Pairs(), DataLoader(data, batch_size=6))


def test_a_bad_normalize_loss_names_the_option():
    with pytest.raises(ValueError, match=r"LossPlugMixin: option 'normalize_loss' must be one of"):
        Model("everywhere")


def test_a_dropped_step_leaves_no_count_behind():
    normalizer = GlobalNormalizer("global")
    parameter = torch.nn.Parameter(torch.ones(2))
    normalizer.batch_sum("ce", torch.tensor(1.0), {"ce": 5})
    normalizer.discard()  # on_nonfinite="skip" dropped that step
    normalizer.batch_sum("ce", torch.tensor(1.0), {"ce": 4})
    parameter.grad = torch.full((2,), 8.0)
    normalizer.rescale([parameter], accumulated=1, world_size=1)
    assert parameter.grad.tolist() == [2.0, 2.0]  # 8 / 4, not 8 / 9
