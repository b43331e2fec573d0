"""``normalize_loss="global"``: the gradient of the mean over the whole optimizer step.

Two real processes over gloo, ``accumulate_grad_batches=3``, micro-batches with uneven numbers
of ignored targets, float64 (tests/jobs/normalize_job.py), with Lightning's distributed sampler
on (its repeat of sample 0 included) and with each rank's own micro-batches of uneven sizes.
For cross-entropy (one count), contrastive (``pos`` and ``neg`` counted over different pairs)
and a composite of cross-entropy and a model term counted over every sample (weighted by
learned uncertainty), one SGD step must land where one process's step on the loss over every
item of the 6 micro-batches lands: each component's summed item losses over its summed count,
written out in tests/helpers/normalize_cases.py, to 1e-6. The default,
``normalize_loss="batch"``, lands where the mean of the micro-batches' losses does.
"""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from conftest import JOBS, quiet_trainer, run_python
from lightning.pytorch.plugins import MixedPrecision
from normalize_cases import (
    CASES,
    IGNORE,
    LR,
    SHARDINGS,
    Model,
    criterion,
    micro_batches,
    naive_update,
    reference_update,
    step_batches,
    trained,
)
from torch.utils.data import DataLoader, TensorDataset

from lossplug import LossPlugMixin
from lossplug.losses import ContrastiveLoss, DiceCELoss, MultiTermLoss
from lossplug.normalize import GlobalNormalizer

Params = dict[str, list[float]]


@pytest.fixture(scope="module", params=SHARDINGS)
def two_processes(request, tmp_path_factory) -> tuple[str, dict[str, dict[str, Params]]]:
    """The sharding and, for each loss and normalize_loss, the parameters after the step."""
    sharding = request.param
    out = tmp_path_factory.mktemp(f"normalize-{sharding}")
    result = run_python(JOBS / "normalize_job.py", out, sharding, cwd=out, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return sharding, json.loads((out / "params.json").read_text())


def assert_params(got: Params, expected: Params) -> None:
    assert got.keys() == expected.keys()
    for name, values in got.items():
        assert values == pytest.approx(expected[name], abs=1e-6), name


def assert_differ(got: Params, other: Params) -> None:
    """Some parameter is more than 1e-4 away: the case tells the two steps apart."""
    assert any(values != pytest.approx(other[name], abs=1e-4) for name, values in got.items()), (
        "the two steps are the same here, so the test could not fail"
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_global_gives_the_step_of_the_mean_over_every_process_and_micro_batch(two_processes, case):
    sharding, results = two_processes
    assert_params(results[case]["global"], reference_update(case, step_batches(sharding)))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_batch_gives_the_mean_of_the_micro_batch_means(two_processes, case):
    sharding, results = two_processes
    got = results[case]["batch"]
    assert_params(got, naive_update(case, step_batches(sharding)))
    assert_differ(got, reference_update(case, step_batches(sharding)))


@pytest.mark.parametrize("case", CASES)
def test_one_process_accumulating_gives_the_step_of_the_mean_over_its_micro_batches(case):
    model = Model("global", "own", case)
    quiet_trainer(max_steps=1, precision="64-true", accumulate_grad_batches=3).fit(model)
    batches = micro_batches("own", 0)
    expected = reference_update(case, batches)
    assert_params(trained(model), expected)
    assert_differ(expected, naive_update(case, batches))


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
    """A linear embedding trained with the contrastive loss."""

    def __init__(self, loss: torch.nn.Module | None = None) -> None:
        optimizer = lambda params: torch.optim.SGD(params, lr=LR)  # noqa: E731
        loss = ContrastiveLoss() if loss is None else loss
        super().__init__(loss=loss, optimizer=optimizer, normalize_loss="global")
        self.net = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pairs() -> DataLoader:
    data = TensorDataset(torch.randn(6, 2), torch.tensor([0, 0, 1, 1, 2, 2]))
    return DataLoader(data, batch_size=6)


class Segmenter(LossPlugMixin, L.LightningModule):
    """A 1x1 convolution trained with weighted Dice + cross-entropy (samples, kept positions)."""

    def __init__(self, normalize_loss: str) -> None:
        loss = DiceCELoss(dice_weight=0.3, ce_weight=0.7, ignore_index=IGNORE)
        optimizer = lambda params: torch.optim.SGD(params, lr=LR)  # noqa: E731
        super().__init__(loss=loss, optimizer=optimizer, normalize_loss=normalize_loss)
        torch.manual_seed(0)
        self.net = torch.nn.Conv2d(2, 3, kernel_size=1).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_weighted_count_groups_accumulated_step_as_one_batch_of_them_all():
    """Dice's mean runs over samples, cross-entropy's over kept positions, each weighted: 2
    micro-batches of 3 and 1 samples (ignored positions in the first only) step as one batch
    of the 4 does without accumulation, where the default takes the mean of their losses."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, 3, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (4, 3, 3), generator=generator)
    y[:2, 0] = IGNORE
    steps = {}
    for normalize, accumulate, batch in (("global", 2, 3), ("batch", 1, 4), ("batch", 2, 3)):
        model = Segmenter(normalize)
        trainer = quiet_trainer(max_steps=1, accumulate_grad_batches=accumulate)
        trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=batch))
        steps[normalize, accumulate] = trained(model)
    assert_params(steps["global", 2], steps["batch", 1])
    assert_differ(steps["batch", 2], steps["batch", 1])


def test_bf16_mixed_keeps_the_step_of_the_mean():
    """The count groups' gradients under autocast: the step is that of the same loss over the 3
    micro-batches as one, its layer under autocast too, to bfloat16's rounding (the gradients
    reach the layer's 16-bit output, one group at a time), far from the naive step."""
    model = Model("global", "own", "contrastive", floats=torch.float32)
    trainer = quiet_trainer(max_steps=1, precision="bf16-mixed", accumulate_grad_batches=3)
    trainer.fit(model)
    batches = [(x.float(), y) for x, y in micro_batches("own", 0)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference_update("contrastive", batches)
        naive = naive_update("contrastive", batches)
    got = trained(model)
    for name, values in got.items():
        assert values == pytest.approx(expected[name], abs=1e-2), name
    assert got["net.weight"] != pytest.approx(naive["net.weight"], abs=0.1)


def test_several_count_groups_under_a_grad_scaler_are_refused():
    scaler = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    message = r"normalize_loss='global'.*contrastive's count groups.*GradScaler.*bf16-mixed"
    with pytest.raises(ValueError, match=message):
        quiet_trainer(max_steps=1, plugins=[scaler]).fit(Pairs(), pairs())


class UnevenPairs(MultiTermLoss):
    """Contrastive's components under one count group, as a loss that forgot to declare them."""

    name = "uneven_pairs"

    def component_names(self) -> tuple[str, ...]:
        return ("pos", "neg")

    def components(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return ContrastiveLoss().components(pred, target)

    def measured_components(self, pred, target):
        return ContrastiveLoss().measured_components(pred, target)


def test_components_of_one_group_counted_over_different_items_are_refused():
    message = r"uneven_pairs's \['pos', 'neg'\] are one group.*pos: 3, neg: 12.*separate_counts"
    with pytest.raises(ValueError, match=message):
        quiet_trainer(max_steps=1).fit(Pairs(UnevenPairs()), pairs())


def test_a_bad_normalize_loss_names_the_option():
    with pytest.raises(ValueError, match=r"LossPlugMixin: option 'normalize_loss' must be one of"):
        Model("everywhere")


def test_a_dropped_step_leaves_no_count_nor_gradient_behind():
    """What ``on_nonfinite="skip"`` drops is gone: the next step is as if it were the first."""
    loss = criterion("contrastive")
    (x, y), (x2, y2) = micro_batches("own", 1)[:2]

    def step(normalizer: GlobalNormalizer, x: torch.Tensor, y: torch.Tensor) -> None:
        net.zero_grad()
        components, counts = loss.measured_components(net(x), y)
        total = loss.total(components)
        normalizer.batch_sum(loss, total, components, counts, net.parameters()).backward()

    net = torch.nn.Linear(5, 3).double()
    dropped = GlobalNormalizer("global")
    step(dropped, x, y)
    dropped.discard()  # on_nonfinite="skip" dropped that step
    step(dropped, x2, y2)
    dropped.rescale(net.parameters(), accumulated=1, world_size=1)
    got = [p.grad.clone() for p in net.parameters()]
    fresh = GlobalNormalizer("global")
    step(fresh, x2, y2)
    fresh.rescale(net.parameters(), accumulated=1, world_size=1)
    for grad, p in zip(got, net.parameters(), strict=True):
        torch.testing.assert_close(grad, p.grad, rtol=0, atol=0)
    net.zero_grad()
    loss(net(x2), y2).backward()  # one micro-batch: the step's mean is the batch's
    for grad, p in zip(got, net.parameters(), strict=True):
        torch.testing.assert_close(grad, p.grad)
