"""The packaged Hydra config groups: every loss, optimizer and scheduler composes and runs."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from conftest import DEMO_CONF, softmax_passes
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
)
from hydra.utils import get_object
from omegaconf import OmegaConf

import lossplug.conf
from lossplug.config import ConfigError
from lossplug.demo.training import build
from lossplug.losses import DiceCELoss
from lossplug.mixin import build_criterion

CONF = Path(lossplug.conf.__file__).parent  # the library's groups
#: where each group lives: the library's in the package, the demo app's in conf/
GROUP_DIRS = {group: CONF for group in ("loss", "optimizer", "scheduler", "diagnostics")}

#: each loss with an experiment whose data fits it
LOSS_EXPERIMENTS = [
    ("mse", "regression"),
    ("l1", "regression"),
    ("huber", "regression"),
    ("smooth_l1", "regression"),
    ("charbonnier", "regression"),
    ("quantile", "regression"),
    ("cross_entropy", "classification"),
    ("bce", "classification"),
    ("kl_div", "classification"),
    ("hinge", "classification"),
    ("focal", "classification"),
    ("poly1", "classification"),
    ("asymmetric", "classification"),
    ("dice", "segmentation"),
    ("tversky", "segmentation"),
    ("generalized_dice", "segmentation"),
    ("lovasz_softmax", "segmentation"),
    ("lovasz_hinge", "segmentation"),
    ("dice_ce", "segmentation"),
    ("dice_ce_terms", "segmentation"),
    ("dice_ce_ramp", "segmentation"),
    ("dice_ce_uncertainty", "segmentation"),
    ("dice_ce_dwa", "segmentation"),
    ("dice_ce_famo", "segmentation"),
    ("focal_dice", "segmentation"),
    ("focal", "segmentation"),
    ("cross_entropy", "segmentation"),
    ("bce", "segmentation"),
    ("triplet", "metric_learning"),
    ("contrastive", "metric_learning"),
    ("infonce", "metric_learning"),
    ("supcon", "metric_learning"),
    ("vae", "vae"),
    ("multitask", "multitask"),
]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (GROUP_DIRS.get(group, DEMO_CONF) / group).glob("*.yaml"))


def fit(cfg):
    job = build(cfg)
    job.trainer.fit(job.model, datamodule=job.datamodule)
    return job


def test_the_documented_choices_exist():
    assert options("loss") == sorted(
        [
            *("mse", "l1", "huber", "smooth_l1", "charbonnier", "quantile"),
            *("cross_entropy", "bce", "kl_div", "hinge", "focal", "poly1", "asymmetric"),
            *("dice", "tversky", "dice_ce", "triplet", "contrastive", "infonce", "supcon"),
            *("dice_ce_terms", "dice_ce_ramp", "dice_ce_uncertainty", "dice_ce_dwa"),
            "dice_ce_famo",
            *("focal_dice", "vae", "generalized_dice", "lovasz_softmax", "lovasz_hinge"),
            "multitask",
        ]
    )
    assert options("optimizer") == ["adam", "adamw", "rmsprop", "sgd"]
    assert options("scheduler") == ["cosine", "none", "onecycle", "plateau", "step"]
    assert options("trainer") == ["ddp", "ddp_multinode", "ddp_sim", "default", "gpu"]
    assert options("experiment") == [
        "classification",
        "metric_learning",
        "multitask",
        "regression",
        "segmentation",
        "vae",
    ]
    assert {loss for loss, _ in LOSS_EXPERIMENTS} == set(options("loss"))


COMPOSITES = {
    *("dice_ce_terms", "dice_ce_ramp", "dice_ce_uncertainty", "dice_ce_dwa", "focal_dice", "vae"),
    "dice_ce_famo",
    "multitask",
}


@pytest.mark.parametrize("name", [n for n in options("loss") if n not in COMPOSITES])
def test_each_loss_config_lists_every_option_of_its_class(name):
    cfg = OmegaConf.load(CONF / "loss" / f"{name}.yaml")
    parameters = inspect.signature(get_object(cfg._target_)).parameters
    assert set(cfg) - {"_target_"} == set(parameters)
    for option, parameter in parameters.items():
        assert cfg[option] == parameter.default, option


@pytest.mark.parametrize(("loss", "experiment"), LOSS_EXPERIMENTS)
def test_every_loss_runs_with_a_matching_experiment(compose_train, loss, experiment):
    cfg = compose_train(f"experiment={experiment}", f"loss={loss}", "+trainer.fast_dev_run=true")
    job = fit(cfg)
    metrics = job.trainer.callback_metrics
    assert math.isfinite(metrics["train/loss"])
    assert math.isfinite(metrics["val/loss"])
    component_names = job.model.criterion.components.__self__  # the built criterion
    assert component_names is job.model.criterion
    logged = {key.split("/")[-1] for key in metrics if key.startswith("val/loss/")}
    expected = {name: {"dice", "ce"} for name in (*COMPOSITES, "dice_ce")} | {
        "focal_dice": {"focal", "dice"},
        "poly1": {"ce", "poly"},
        **{name: {"pos", "neg"} for name in ("contrastive", "infonce", "supcon", "asymmetric")},
        "vae": {"recon", "kl"},
        "multitask": {"digit", "ink"},
        "quantile": {"q10", "q50", "q90"},
    }
    assert logged == expected.get(loss, {job.model.criterion.name})


def test_dice_ce_weights_and_options_are_overridable(compose_train):
    cfg = compose_train(
        "experiment=segmentation", "loss.dice_weight=0.5", "loss.include_background=false"
    )
    criterion = build(cfg).model.criterion
    assert isinstance(criterion, DiceCELoss)
    assert (criterion.dice_weight, criterion.ce_weight) == (0.5, 1.0)
    assert criterion.include_background is False


def test_dice_ce_terms_weights_and_term_options_are_overridable(compose_train):
    cfg = compose_train(
        "experiment=segmentation",
        "loss=dice_ce_terms",
        "loss.weights.dice=0.5",
        "loss.terms.dice.include_background=false",
        "loss.terms.ce.label_smoothing=0.1",
    )
    criterion = build(cfg).model.criterion
    assert criterion.weights == {"dice": 0.5, "ce": 1.0}
    assert criterion.terms["dice"].include_background is False
    assert criterion.terms["ce"].label_smoothing == 0.1


@pytest.mark.parametrize("loss", ["infonce", "supcon"])
def test_a_learned_temperature_trains_from_the_config_without_weight_decay(compose_train, loss):
    cfg = compose_train(
        "experiment=metric_learning",
        f"loss={loss}",
        "loss.learn_temperature=true",
        "optimizer=adamw",
        "+trainer.fast_dev_run=true",
    )
    job = build(cfg)
    logit_scale = job.model.criterion.learned_temperature.logit_scale
    start = logit_scale.item()
    job.trainer.fit(job.model, datamodule=job.datamodule)
    assert logit_scale.item() != start  # trained with the model
    (optimizer,) = job.trainer.optimizers
    (group,) = [g for g in optimizer.param_groups if any(p is logit_scale for p in g["params"])]
    assert group["weight_decay"] == 0.0 < optimizer.defaults["weight_decay"]


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_trains_an_epoch(compose_train, optimizer):
    cfg = compose_train(
        f"optimizer={optimizer}",
        "optimizer.lr=0.002",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
    )
    job = fit(cfg)
    (built,) = job.trainer.optimizers
    assert type(built).__name__.lower() == optimizer
    assert {group["lr"] for group in built.param_groups} == {0.002}
    assert job.trainer.current_epoch == 1


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ("none", None),
        ("cosine", "CosineAnnealingLR"),
        ("step", "StepLR"),
        ("onecycle", "OneCycleLR"),
        ("plateau", "ReduceLROnPlateau"),
    ],
)
def test_every_scheduler_trains_an_epoch(compose_train, scheduler, expected):
    cfg = compose_train(
        f"scheduler={scheduler}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
    )
    job = fit(cfg)
    configs = job.trainer.lr_scheduler_configs
    assert [type(c.scheduler).__name__ for c in configs] == ([expected] if expected else [])
    if scheduler == "plateau":
        assert configs[0].monitor == "val/loss"
    if scheduler == "onecycle":
        assert configs[0].interval == "step"
        assert configs[0].scheduler.total_steps == 2  # filled from the run's length
    if scheduler == "cosine":
        assert configs[0].scheduler.T_max == 1


def test_lr_mult_from_the_command_line(compose_train):
    cfg = compose_train("optimizer.lr=0.01", "optimizer.lr_mult={backbone:0.1}")
    optimizer = build(cfg).model.configure_optimizers()
    assert sorted({group["lr"] for group in optimizer.param_groups}) == pytest.approx([1e-3, 1e-2])


# -- bad configs fail before training, and say what is valid ---------------------------------


def build_error(cfg) -> BaseException:
    """The error building ``cfg`` raises, unwrapped from Hydra's InstantiationException."""
    with pytest.raises(Exception) as info:
        build(cfg)
    error = info.value
    while isinstance(error, InstantiationException):
        error = error.__cause__
    return error


def test_unknown_loss_lists_the_available_ones(compose_train):
    with pytest.raises(MissingConfigException) as error:
        compose_train("loss=foo")
    assert "focal" in str(error.value)
    assert "dice_ce" in str(error.value)


def test_misspelt_loss_option_is_refused_at_composition(compose_train):
    with pytest.raises(ConfigCompositionException, match="gama"):
        compose_train("loss=focal", "loss.gama=3")


def test_added_misspelt_loss_option_names_the_valid_options(compose_train):
    error = build_error(compose_train("loss=focal", "+loss.gama=3"))
    assert isinstance(error, ConfigError)
    message = str(error)
    assert "'gama'" in message
    assert "Did you mean 'gamma'?" in message
    assert "alpha, gamma, ignore_index, mode, reduction" in message


def test_misspelt_term_option_names_the_term(compose_train):
    error = build_error(
        compose_train("experiment=segmentation", "loss=dice_ce_terms", "+loss.terms.dice.smooth=1")
    )
    assert isinstance(error, ConfigError)
    assert "loss.terms.dice: unknown option 'smooth'" in str(error)


def test_negative_loss_weight_fails_before_training(compose_train):
    error = build_error(
        compose_train("experiment=segmentation", "loss=dice_ce_terms", "loss.weights.dice=-0.5")
    )
    assert isinstance(error, ValueError)
    assert "composite: option 'weights.dice' must be a finite number >= 0.0, got -0.5" in str(error)


def test_negative_learning_rate_fails_before_training(compose_train):
    error = build_error(compose_train("optimizer.lr=-0.001"))
    assert isinstance(error, ValueError)
    assert "optimizer: option 'lr' must be a finite number >= 0.0, got -0.001" in str(error)


def test_misspelt_optimizer_option_names_the_valid_options(compose_train):
    error = build_error(compose_train("+optimizer.weight_decy=0.1"))
    assert isinstance(error, ConfigError)
    assert "Did you mean 'weight_decay'?" in str(error)


# -- every experiment learns: its metric moves well beyond the untrained model and chance ---


@pytest.mark.parametrize(
    ("overrides", "metric", "chance", "threshold"),
    [
        # all background scores IoU ~0.86 on one of 3 classes: mean IoU ~0.29
        (("experiment=segmentation", "trainer.max_epochs=4"), "val/miou", 0.29, 0.6),
        (("experiment=regression",), "val/r2", 0.0, 0.3),
        (("experiment=classification", "loss=focal", "trainer.max_epochs=4"), "val/acc", 0.1, 0.9),
        # raw digits are already well separated: the embedding must improve on the untrained one
        (("experiment=metric_learning", "trainer.max_epochs=5"), "val/knn_acc", None, 0.93),
        (
            ("experiment=metric_learning", "loss=contrastive", "trainer.max_epochs=5"),
            "val/knn_acc",
            None,
            0.93,
        ),
    ],
)
def test_experiment_learns(compose_train, overrides, metric, chance, threshold):
    job = build(compose_train(*overrides, "+trainer.inference_mode=false"))
    (untrained,) = job.trainer.validate(job.model, datamodule=job.datamodule, verbose=False)
    job.trainer.fit(job.model, datamodule=job.datamodule)
    trained = float(job.trainer.callback_metrics[metric])
    assert trained > threshold
    assert trained > untrained[metric] + 0.01
    if chance is not None:
        assert untrained[metric] < chance + 0.1 < trained


def test_multi_gpu_trainers_compose_with_their_overrides(compose_train):
    cfg = compose_train("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    assert (cfg.trainer.accelerator, cfg.trainer.strategy) == ("gpu", "ddp")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)
    assert cfg.trainer.max_epochs == 15  # the experiment's settings still apply
    assert compose_train("trainer=gpu").trainer.accelerator == "gpu"


def test_the_dice_ce_config_shares_one_softmax_between_its_terms(compose_train):
    cfg = compose_train("experiment=segmentation")
    criterion = build_criterion(cfg.loss)
    assert isinstance(criterion, DiceCELoss)  # the README's claim for loss=dice_ce
    logits = torch.randn(2, cfg.model.num_classes, 8, 8, requires_grad=True)
    target = torch.randint(0, cfg.model.num_classes, (2, 8, 8))

    def step() -> None:
        criterion.total(criterion.measured_components(logits, target)[0]).backward()

    assert softmax_passes(step) == 1
