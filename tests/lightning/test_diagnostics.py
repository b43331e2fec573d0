"""GradientDiagnostics: per-term gradient norms and cosines, checked against torch.autograd.grad.

The references are computed here, per term, with ``torch.nn.functional`` losses and
``torch.autograd.grad`` in float64 on the parameters and batch of each sampled step, and
compared with the values read back from TensorBoard (or ``trainer.callback_metrics``).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import DEMO_CONF, JOBS, REPO, run_python
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import (
    SCALARS,
    TENSORS,
    EventAccumulator,
)
from tensorboard.plugins.custom_scalar import layout_pb2
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import CompositeLoss, LossPlugMixin, MultiTermLoss
from lossplug.config import ConfigError, check_command_line
from lossplug.demo.training import build
from lossplug.diagnostics import GradientDiagnostics, gradient_statistics
from lossplug.losses import HuberLoss, L1Loss, MSELoss

DDP_JOB = JOBS / "ddp_diagnostics_job.py"

pytestmark = pytest.mark.filterwarnings(
    "ignore:You defined a `validation_step`", "ignore:The number of training batches"
)

LR = 0.1
SGD = functools.partial(torch.optim.SGD, lr=LR)
WEIGHTS = {"mse": 1.0, "l1": 0.5, "huber": 2.0}
#: the reference's formula for each term, unweighted.
TERM_FORMULAS = {
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "huber": functools.partial(F.huber_loss, delta=1.0),
}


def make_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


class Regressor(LossPlugMixin, pl.LightningModule):
    def __init__(self, loss, optimizer=SGD) -> None:
        super().__init__(loss=loss, optimizer=optimizer)
        torch.manual_seed(0)
        self.net = make_net()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LearnedScaleLoss(MultiTermLoss):
    """exp(-s) * mse + s with a learnable s: the criterion owns a parameter."""

    name = "learned_scale"

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(0.3))

    def component_names(self) -> tuple[str, ...]:
        return ("fit", "reg")

    def components(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"fit": (-self.log_scale).exp() * F.mse_loss(pred, target), "reg": self.log_scale}


def three_terms() -> CompositeLoss:
    return CompositeLoss(
        {"mse": MSELoss(), "l1": L1Loss(), "huber": HuberLoss()},
        weights=WEIGHTS,
    )


def loader(batch_size: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(24, 4, generator=generator)
    y = 2 * torch.randn(24, 3, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


class Snapshots(pl.Callback):
    """The module's state and the batch at the start of each optimizer step (first batch)."""

    def __init__(self) -> None:
        self.steps: dict[int, tuple[dict[str, Tensor], tuple[Tensor, Tensor]]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        state = {name: value.detach().clone() for name, value in pl_module.state_dict().items()}
        self.steps.setdefault(trainer.global_step, (state, batch))


def fit(
    module, callbacks, log_dir: Path | None = None, batch_size: int = 8, **options
) -> pl.Trainer:
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 3,
        "log_every_n_steps": 50,  # diagnostics are written on their own steps regardless
        "enable_progress_bar": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        **options,
    }
    logger = TensorBoardLogger(log_dir, name="tb", version=0) if log_dir else False
    trainer = pl.Trainer(logger=logger, callbacks=callbacks, **settings)
    trainer.fit(module, train_dataloaders=loader(batch_size))
    return trainer


def written_points(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the diagnostics written to TensorBoard, in order."""
    events = EventAccumulator(str(log_dir / "tb" / "version_0"), size_guidance={SCALARS: 0})
    events.Reload()
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()[SCALARS]
        if tag.startswith("train/grad_")
    }


def charted(log_dir: Path) -> list[str]:
    """The titles of the charts in the run's custom-scalars layout."""
    events = EventAccumulator(str(log_dir / "tb" / "version_0"), size_guidance={TENSORS: 0})
    events.Reload()
    layout = layout_pb2.Layout()
    layout.ParseFromString(
        events.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0]
    )
    return [chart.title for category in layout.category for chart in category.chart]


def logged(log_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the diagnostics written to TensorBoard."""
    return {tag: dict(points) for tag, points in written_points(log_dir).items()}


def reference_gradients(
    state: dict[str, Tensor],
    batch: tuple[Tensor, Tensor],
    weights: dict[str, float],
    prefixes: tuple[str, ...] = ("net.",),
) -> dict[str, Tensor]:
    """Each weighted term's gradient on the selected parameters, flattened, in float64."""
    net = make_net().double()
    net.load_state_dict({name[4:]: value for name, value in state.items() if name[:4] == "net."})
    params = [p for name, p in net.named_parameters() if f"net.{name}".startswith(prefixes)]
    x, y = (tensor.double() for tensor in batch)
    output = net(x)
    gradients = {}
    for name, weight in weights.items():
        term = weight * TERM_FORMULAS[name](output, y)
        grads = torch.autograd.grad(term, params, retain_graph=True)
        gradients[name] = torch.cat([grad.reshape(-1) for grad in grads])
    return gradients


def reference_values(gradients: dict[str, Tensor]) -> dict[str, float]:
    values = {f"train/grad_norm/{name}": grad.norm().item() for name, grad in gradients.items()}
    for a, b in itertools.combinations(gradients, 2):
        cosine = F.cosine_similarity(gradients[a], gradients[b], dim=0)
        values[f"train/grad_cosine/{a}__{b}"] = cosine.item()
    return values


# -- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "prefixes"),
    [
        (None, ("net.",)),
        ("net.0", ("net.0.",)),
        (["net.2.bias", "net.0.weight"], ("net.2.bias", "net.0.weight")),
    ],
)
def test_norms_and_cosines_match_autograd_reference_at_each_step(tmp_path, params, prefixes):
    snapshots = Snapshots()
    diagnostics = GradientDiagnostics(every_n_steps=1, params=params)
    trainer = fit(Regressor(three_terms()), [snapshots, diagnostics], tmp_path)
    written = logged(tmp_path)
    assert set(written) == {
        "train/grad_norm/mse",
        "train/grad_norm/l1",
        "train/grad_norm/huber",
        "train/grad_cosine/mse__l1",  # every pair a < b in term order
        "train/grad_cosine/mse__huber",
        "train/grad_cosine/l1__huber",
    }
    for step, (state, batch) in snapshots.steps.items():
        expected = reference_values(reference_gradients(state, batch, WEIGHTS, prefixes))
        for tag, value in expected.items():
            assert written[tag][step] == pytest.approx(value, rel=1e-5, abs=1e-7), (tag, step)
    assert sorted(snapshots.steps) == [0, 1, 2]
    last = reference_values(reference_gradients(*snapshots.steps[2], WEIGHTS, prefixes))
    for tag, value in last.items():  # the latest values are in callback_metrics too
        assert trainer.callback_metrics[tag].item() == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_the_terms_differ_enough_to_tell_the_keys_apart():
    """The three norms and cosines differ, so a swapped key would fail the test above."""
    batch = next(iter(loader()))
    state = Regressor(three_terms()).state_dict()
    expected = reference_values(reference_gradients(state, batch, WEIGHTS))
    for kind in ("norm", "cosine"):
        values = sorted(value for tag, value in expected.items() if kind in tag)
        assert min(b - a for a, b in itertools.pairwise(values)) > 1e-3, kind


def test_a_single_term_loss_logs_one_norm_and_no_cosine(tmp_path):
    snapshots = Snapshots()
    fit(Regressor(MSELoss()), [snapshots, GradientDiagnostics(every_n_steps=1)], tmp_path)
    written = logged(tmp_path)
    assert set(written) == {"train/grad_norm/mse"}
    assert "gradient norm per term" in charted(tmp_path)  # the callback's charts are laid out
    for step, (state, batch) in snapshots.steps.items():
        expected = reference_gradients(state, batch, {"mse": 1.0})["mse"].norm().item()
        assert written["train/grad_norm/mse"][step] == pytest.approx(expected, rel=1e-5)


def test_criterion_parameters_are_left_out_and_a_zero_gradient_has_cosine_zero(tmp_path):
    """``reg`` depends only on the criterion's own parameter: on the model it has no gradient."""
    snapshots = Snapshots()
    fit(Regressor(LearnedScaleLoss()), [snapshots, GradientDiagnostics(every_n_steps=1)], tmp_path)
    written = logged(tmp_path)
    assert set(written) == {
        "train/grad_norm/fit",
        "train/grad_norm/reg",
        "train/grad_cosine/fit__reg",
    }
    for step, (state, batch) in snapshots.steps.items():
        scale = (-state["criterion.log_scale"].double()).exp().item()
        expected = reference_gradients(state, batch, {"mse": scale})["mse"].norm().item()
        assert written["train/grad_norm/fit"][step] == pytest.approx(expected, rel=1e-5)
        assert written["train/grad_norm/reg"][step] == 0.0  # 1.0 if log_scale were included
        assert written["train/grad_cosine/fit__reg"][step] == 0.0
    assert snapshots.steps[2][0]["criterion.log_scale"] != 0.3  # the optimizer did train it


def test_gradient_statistics_formulas():
    gradients = torch.tensor([[3.0, 4.0, 0.0], [-3.0, -4.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 2.0]])
    values = gradient_statistics(("a", "b", "c", "d"), gradients)
    assert list(values) == [
        "train/grad_norm/a",
        "train/grad_norm/b",
        "train/grad_norm/c",
        "train/grad_norm/d",
        "train/grad_cosine/a__b",
        "train/grad_cosine/a__c",
        "train/grad_cosine/a__d",
        "train/grad_cosine/b__c",
        "train/grad_cosine/b__d",
        "train/grad_cosine/c__d",
    ]
    assert values["train/grad_norm/a"] == pytest.approx(5.0)
    assert values["train/grad_norm/d"] == pytest.approx(8**0.5)
    assert values["train/grad_cosine/a__b"] == pytest.approx(-1.0)
    assert values["train/grad_cosine/a__c"] == 0.0 and values["train/grad_cosine/c__d"] == 0.0
    assert values["train/grad_cosine/a__d"] == pytest.approx(8 / (5 * 8**0.5))


# -- the update and the sampling ---------------------------------------------------------------


@pytest.mark.parametrize("every_n_steps", [1, 2])
def test_the_update_is_identical_with_and_without_diagnostics(every_n_steps):
    adam = functools.partial(torch.optim.Adam, lr=0.05)
    plain, diagnosed = Regressor(three_terms(), adam), Regressor(three_terms(), adam)
    pairs = zip(plain.parameters(), diagnosed.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    initial = [p.detach().clone() for p in plain.parameters()]
    fit(plain, [], max_steps=6, deterministic=True)
    fit(
        diagnosed,
        [GradientDiagnostics(every_n_steps=every_n_steps)],
        max_steps=6,
        deterministic=True,
    )
    for before, a, b in zip(initial, plain.parameters(), diagnosed.parameters(), strict=True):
        assert not torch.equal(before, a)  # it did train
        assert torch.equal(a, b)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_only_every_nth_optimizer_step_is_diagnosed(tmp_path, accumulate):
    diagnostics = GradientDiagnostics(every_n_steps=3)
    # 24 samples in batches of 8 / accumulate: 3 optimizer steps per epoch either way
    fit(
        Regressor(three_terms()),
        [diagnostics],
        tmp_path,
        max_steps=10,
        accumulate_grad_batches=accumulate,
        batch_size=8 // accumulate,
    )
    points = written_points(tmp_path)
    assert len(points) == 6  # 3 norms, 3 cosines
    for tag, steps_and_values in points.items():
        assert [step for step, _ in steps_and_values] == [0, 3, 6, 9], tag


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("every_n_steps", [0, -3, 2.5, True, "10"])
def test_every_n_steps_must_be_a_positive_integer(every_n_steps):
    with pytest.raises(ValueError) as error:
        GradientDiagnostics(every_n_steps=every_n_steps)
    assert str(error.value) == (
        f"GradientDiagnostics: option 'every_n_steps' must be an integer >= 1, "
        f"got {every_n_steps!r}"
    )


@pytest.mark.parametrize("params", [[], [3], ""])
def test_params_must_be_name_prefixes(params):
    with pytest.raises(ValueError, match="GradientDiagnostics: option 'params' must be None, a"):
        GradientDiagnostics(params=params)


def test_a_prefix_matching_nothing_is_named_with_the_parameters_before_training():
    snapshots = Snapshots()
    with pytest.raises(ValueError) as error:
        fit(Regressor(three_terms()), [snapshots, GradientDiagnostics(params=["net.0", "encoder"])])
    message = str(error.value)
    assert "option 'params' prefix 'encoder' matches no trainable parameter of Regressor" in message
    assert "net.0.weight, net.0.bias, net.2.weight, net.2.bias" in message
    assert not snapshots.steps  # no training step ran


def test_a_prefix_matches_whole_name_parts_only():
    with pytest.raises(
        ValueError, match=re.escape("prefix 'net.0.weigh' matches no trainable parameter")
    ):
        fit(Regressor(three_terms()), [GradientDiagnostics(params="net.0.weigh")])


def test_a_module_without_the_mixin_is_refused():
    class Plain(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    with pytest.raises(
        TypeError, match=r"the module must be a lossplug\.LossPlugMixin .* got Plain"
    ):
        fit(Plain(), [GradientDiagnostics()])


# -- Hydra config and scripts/train.py -----------------------------------------------------------


def test_the_config_group_adds_the_callback_with_its_options(compose_train):
    cfg = compose_train(
        "experiment=segmentation", "diagnostics=grad", "diagnostics.every_n_steps=10"
    )
    callbacks = [cb for cb in build(cfg).trainer.callbacks if isinstance(cb, GradientDiagnostics)]
    assert len(callbacks) == 1 and callbacks[0].every_n_steps == 10
    assert callbacks[0].prefixes is None


def test_diagnostics_are_off_by_default(compose_train):
    trainer = build(compose_train("experiment=segmentation")).trainer
    assert not any(isinstance(cb, GradientDiagnostics) for cb in trainer.callbacks)


def test_a_typo_in_a_diagnostics_option_names_the_valid_ones():
    with pytest.raises(ConfigError, match="Did you mean 'every_n_steps'"):
        check_command_line(["diagnostics=grad", "diagnostics.every_n_step=10"], DEMO_CONF)


def test_train_script_logs_diagnostics_of_dice_ce(tmp_path):
    result = run_python(
        REPO / "scripts" / "train.py",
        "experiment=segmentation",
        "diagnostics=grad",
        "diagnostics.params=[net.head]",
        "+trainer.fast_dev_run=true",
        "test=false",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for tag in ("train/grad_norm/dice", "train/grad_norm/ce", "train/grad_cosine/dice__ce"):
        assert tag in result.stdout  # train() prints the final callback_metrics


# -- DDP -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_ranks(tmp_path_factory) -> list[dict]:
    """What each rank of tests/jobs/ddp_diagnostics_job.py logged and saw."""
    out = tmp_path_factory.mktemp("ddp_diagnostics")
    result = run_python(DDP_JOB, out, cwd=out, timeout=240)  # a hang fails, never blocks
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


def ddp_gradients(ranks: list[dict], step: int) -> list[dict[str, Tensor]]:
    """Each rank's per-term reference gradients at ``step``, on its own batch."""
    weights = ranks[0]["settings"]["weights"]
    per_rank = []
    for rank in ranks:
        snapshot = rank["steps"][step]
        state = {f"net.{name}": value for name, value in snapshot["state"].items()}
        per_rank.append(reference_gradients(state, snapshot["batch"], weights))
    return per_rank


def test_ddp_ranks_log_the_same_keys_and_values_on_sampled_steps(ddp_ranks):
    rank0, rank1 = ddp_ranks
    assert [step for step, _ in rank0["logged"]] == [0, 2, 4]
    assert rank0["logged"] == rank1["logged"]  # exactly equal, keys in the same order
    for _, values in rank0["logged"]:
        assert list(values) == [
            "train/grad_norm/mse",
            "train/grad_norm/l1",
            "train/grad_cosine/mse__l1",
        ]


def test_ddp_diagnostics_describe_the_gradient_averaged_over_ranks(ddp_ranks):
    for step, values in ddp_ranks[0]["logged"]:
        per_rank = ddp_gradients(ddp_ranks, step)
        mean = {name: (per_rank[0][name] + per_rank[1][name]) / 2 for name in per_rank[0]}
        for tag, expected in reference_values(mean).items():
            assert values[tag] == pytest.approx(expected, rel=1e-5, abs=1e-7), (tag, step)
        own = reference_values(per_rank[0])  # the data differ: one rank's view is not it
        assert own["train/grad_norm/mse"] != pytest.approx(values["train/grad_norm/mse"], rel=1e-3)


def test_ddp_update_stays_the_mean_gradient_step_with_diagnostics(ddp_ranks):
    """torch.autograd.grad on the live graph leaves DDP's reducer alone, sampled steps too."""
    rank0, rank1 = ddp_ranks
    lr = rank0["settings"]["lr"]
    steps = sorted(rank0["steps"])
    assert steps == [0, 1, 2, 3, 4]
    for step in steps:
        before = rank0["steps"][step]["state"]
        after = rank0["steps"][step + 1]["state"] if step + 1 in steps else rank0["final"]
        for name, value in before.items():
            assert torch.equal(value, rank1["steps"][step]["state"][name])
        per_rank = ddp_gradients(ddp_ranks, step)
        mean_total = sum(per_rank[0].values()) / 2 + sum(per_rank[1].values()) / 2
        applied = torch.cat([(before[name] - after[name]).reshape(-1) for name in before]) / lr
        torch.testing.assert_close(applied.double(), mean_total, rtol=1e-4, atol=1e-5)
    for name, value in rank0["final"].items():
        assert torch.equal(value, rank1["final"][name])


# -- the benchmark -------------------------------------------------------------------------------


def test_bench_diagnostics_quick_times_each_setting_without_changing_the_weights(tmp_path):
    result = run_python(
        "-m", "benchmarks.bench_diagnostics", "--quick", "--out", tmp_path, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_diagnostics.json").read_text())["rows"]
    assert [row["every_n_steps"] for row in rows] == ["none", "1", "10", "50"]
    for row in rows:
        assert row["mean_step_ms"] > 0 and row["same_weights"] is True
    assert rows[1]["sampled_step_ms"] > 0 and rows[2]["other_step_ms"] > 0
    markdown = re.sub(" +", " ", (tmp_path / "bench_diagnostics.md").read_text())  # cells unpadded
    assert "| every_n_steps | sampled step ms |" in markdown
