"""Aligned-MTL in training: 2-process DDP, logging with diagnostics, 16-bit, the configs.

References come from tests/helpers/multitask_cases.py: one process replaying the run with
``torch.nn.functional`` and numpy's SVD, never lossplug's weighting.
"""

from __future__ import annotations

import json
import re

import lightning as L
import numpy as np
import pytest
import torch
from conftest import JOBS, run_python
from ddp_cpu import sampler_indices
from hydra.errors import InstantiationException
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import MixedPrecision
from multitask_cases import (
    TERMS,
    TwoHeads,
    aligned_loss,
    dataset,
    initial_params,
    procrustes_weights,
    reference_steps,
    reference_weights,
)
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
from torch.utils.data import TensorDataset

from lossplug.diagnostics import GradientDiagnostics
from lossplug.mixin import build_criterion

JOB = JOBS / "aligned_mtl_job.py"
SIZE, SEED, BATCH = 23, 11, 6  # the job's

pytestmark = pytest.mark.filterwarnings(
    "ignore:The number of training batches", "ignore:You defined a `validation_step`"
)


def rows(data: TensorDataset, indices: list[int]) -> tuple[torch.Tensor, ...]:
    return tuple(tensor[indices] for tensor in data.tensors)


def global_batch(data: TensorDataset, step: int, drop_repeat: bool = False):
    """Both ranks' batches of ``step``, as the sampler lays them out (rank 1 ends on a repeat)."""
    steps = slice(step * BATCH, (step + 1) * BATCH)
    parts = [sampler_indices(SIZE, SEED, rank)[steps] for rank in (0, 1)]
    if drop_repeat and step == 1:
        parts[1] = parts[1][:-1]
    return rows(data, parts[0] + parts[1])


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])  # 2 steps; 1 step of 2 micro-batches
def test_two_processes_take_one_process_s_step_on_the_global_batch(tmp_path, accumulate):
    result = run_python(JOB, tmp_path, accumulate, cwd=tmp_path, timeout=240)  # a hang fails
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    data = dataset(SIZE)
    layout = [sampler_indices(SIZE, SEED, rank) for rank in (0, 1)]
    assert layout[1][-1] == layout[0][0]  # the sampler's repeat, in rank 1's second batch
    for rank, report in enumerate(ranks):  # the batches are those the reference takes
        for step, inputs in enumerate(report["inputs"]):
            expected = data.tensors[0][layout[rank][step * BATCH : (step + 1) * BATCH]]
            assert inputs == expected.tolist()

    assert ranks[0]["weights"] == ranks[1]["weights"]  # bit for bit
    batches = [global_batch(data, step) for step in (0, 1)]
    steps = [batches] if accumulate == 2 else [[batch] for batch in batches]
    records, params = reference_steps(steps)
    for got, record in zip(ranks[0]["weights"], records, strict=True):
        assert got == pytest.approx(record["weights"], rel=1e-9)
    for name, values in params.items():
        for report in ranks:
            assert report["params"][name] == pytest.approx(values.reshape(-1).tolist(), abs=1e-6)

    # what the all_reduce and keeping the repeat change, so that the checks above can fail
    params = initial_params() if accumulate == 2 else reference_steps(steps[:1])[1]
    local = reference_weights(params, rows(data, layout[1][6:12]))
    assert not np.allclose(local, ranks[0]["weights"][1], rtol=1e-3)
    without = reference_weights(params, global_batch(data, 1, True))
    assert not np.allclose(without, ranks[0]["weights"][1], rtol=1e-6)


def scalars(log_dir) -> dict[str, dict[int, float]]:
    accumulator = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})
    accumulator.Reload()
    tags = accumulator.Tags()[SCALARS]
    return {tag: {e.step: e.value for e in accumulator.Scalars(tag)} for tag in tags}


def test_weights_and_gradient_diagnostics_are_logged_in_one_trainer_run(tmp_path):
    data = dataset(18)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        precision="64-true",
        log_every_n_steps=1,
        logger=TensorBoardLogger(tmp_path, name="run"),
        callbacks=[GradientDiagnostics(every_n_steps=1)],
        default_root_dir=tmp_path,
    )
    trainer.fit(TwoHeads(data=data))
    logged = scalars(tmp_path / "run" / "version_0")
    batches = [rows(data, list(range(step * 6, step * 6 + 6))) for step in range(3)]
    records, _ = reference_steps([[batch] for batch in batches])
    for k, name in enumerate(TERMS):
        weights = logged[f"train/loss_weight/{name}"]
        norms = logged[f"train/grad_norm/{name}"]
        assert sorted(weights) == sorted(norms) == [0, 1, 2]
        for step, record in enumerate(records):
            assert weights[step] == pytest.approx(record["weights"][k], rel=1e-6)
            assert norms[step] == pytest.approx(record["norms"][k], rel=1e-6)
    assert len(logged["train/grad_cosine/value__class"]) == 3
    assert records[0]["weights"] != pytest.approx([1.0, 1.0], abs=0.1)


class FirstWeights(L.Callback):
    def __init__(self) -> None:
        self.weights: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, module, *_) -> None:
        self.weights = module.criterion.learned.factors().clone()


def precision_options(precision: str) -> dict[str, object]:
    """The Trainer options of a precision; 16-mixed on CPU with its GradScaler, as on a GPU."""
    if precision == "16-mixed":
        return {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]}
    return {"precision": precision}


@pytest.mark.parametrize("accumulate", [1, 2])
def test_mixed_precision_gives_finite_weights_close_to_float32(accumulate):
    found = {}
    for precision in ("32-true", "bf16-mixed", "16-mixed"):
        record = FirstWeights()
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=1,
            accumulate_grad_batches=accumulate,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            callbacks=[record],
            **precision_options(precision),
        )
        trainer.fit(TwoHeads(data=dataset(12, torch.float32)))
        found[precision] = record.weights
    for precision in ("bf16-mixed", "16-mixed"):
        weights = found[precision]
        assert weights.dtype == torch.float32 and torch.isfinite(weights).all(), precision
        torch.testing.assert_close(weights, found["32-true"], rtol=0.05, atol=0.0)
    assert found["32-true"] != pytest.approx([1.0, 1.0], abs=0.1)


# -- the Hydra configs ----------------------------------------------------------------------

SEGMENTATION_ROUTES = ("+loss.inputs.dice.pred=seg", "+loss.inputs.ce.pred=seg")


def test_weighting_and_shared_compose_from_the_command_line(compose_train):
    cfg = compose_train(
        "experiment=segmentation",
        "loss=dice_ce_terms",
        "loss.weighting=aligned_mtl",
        "loss.shared=features",
        *SEGMENTATION_ROUTES,
    )
    criterion = build_criterion(cfg.loss)
    assert criterion.weighting == "aligned_mtl" and criterion.shared == "features"
    torch.manual_seed(0)  # a two-layer segmenter: features, then per-pixel class logits
    encode, classify = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 3, 1)
    x, masks = torch.randn(2, 1, 6, 6), torch.randint(0, 3, (2, 6, 6))
    z = encode(x).tanh()
    components = criterion.components({"seg": classify(z), "features": z}, masks)
    criterion.total(components)
    gradients = np.stack(
        [
            torch.autograd.grad(components[n], z, retain_graph=True)[0].reshape(-1).numpy()
            for n in ("dice", "ce")
        ]
    )
    got = criterion.learned.factors().numpy()
    np.testing.assert_allclose(got, procrustes_weights(gradients), rtol=1e-4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("loss.weighting=aligned_mtl",),
            "composite: weighting='aligned_mtl' needs option 'shared', the key (or index) of "
            "the model output holding the shared representation every head reads",
        ),
        (
            ("loss.weighting=aligned_mlt",),
            "composite: option 'weighting' must be one of 'fixed', 'uncertainty', 'dwa', "
            "'famo', 'aligned_mtl', got 'aligned_mlt'",
        ),
        (("loss.weighting=aligned_mtl", "loss.shared=[1]"), "option 'shared' must be a key"),
    ],
)
def test_bad_aligned_mtl_configs_fail_when_built(compose_train, overrides, message):
    cfg = compose_train("experiment=segmentation", "loss=dice_ce_terms", *overrides)
    with pytest.raises(InstantiationException) as info:
        build_criterion(cfg.loss)
    error = info.value.__cause__
    assert message in str(error)


def test_shared_naming_no_output_stops_training_at_the_first_batch(compose_train):
    from lossplug.demo.training import build

    cfg = compose_train(
        "experiment=segmentation",
        "loss=dice_ce_terms",
        "loss.weighting=aligned_mtl",
        "loss.shared=features",
        "+trainer.fast_dev_run=true",
    )
    job = build(cfg)
    message = (
        "composite: weighting 'aligned_mtl' reads pred['features'] (option 'shared'), but it "
        "is a single Tensor, not a dict, tuple or list"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        job.trainer.fit(job.model, datamodule=job.datamodule)
    assert job.trainer.global_step == 0


# -- torch.compile ----------------------------------------------------------------------------


@pytest.mark.slow  # two compilations
def test_a_compiled_encoder_gives_the_eager_weights_and_a_whole_compiled_forward_a_clear_error():
    x, value, label = dataset(12, torch.float32).tensors
    target = {"value": value, "class": label}
    eager, compiled = aligned_loss(), aligned_loss()
    model = TwoHeads()
    eager.total(eager.components(model(x), target))
    model.encoder = torch.compile(model.encoder)
    compiled.total(compiled.components(model(x), target))
    torch.testing.assert_close(compiled.learned.factors(), eager.learned.factors())
    whole = torch.compile(TwoHeads().forward)
    with pytest.raises(ValueError, match=r"Under torch.compile, compile the shared layers and"):
        compiled.total(compiled.components(whole(x), target))
