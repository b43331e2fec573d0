"""Parameter groups, optimizer and scheduler specs (lossplug.optim)."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lossplug import CompositeLoss
from lossplug.config import ConfigError
from lossplug.optim import OptimizerSpec, ParamGroupOptions, SchedulerSpec, param_groups


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 4))
        self.neck = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.scale = nn.Parameter(torch.ones(1))


def adamw(**options):
    return {"_target_": "torch.optim.AdamW", "_partial_": True, **options}


def settings_by_name(net, optimizer):
    """{parameter name: (lr, weight_decay)} read back from the built optimizer."""
    names = {id(p): name for name, p in net.named_parameters()}
    return {
        names[id(p)]: (group["lr"], group["weight_decay"])
        for group in optimizer.param_groups
        for p in group["params"]
    }


def test_no_decay_on_norms_and_biases_by_default():
    net = Net()
    optimizer = OptimizerSpec.parse(adamw(lr=0.1, weight_decay=0.5)).build(net)
    settings = settings_by_name(net, optimizer)
    assert settings == {
        "backbone.0.weight": (0.1, 0.5),
        "backbone.0.bias": (0.1, 0.0),
        "backbone.1.weight": (0.1, 0.0),  # batch norm
        "backbone.1.bias": (0.1, 0.0),
        "backbone.2.weight": (0.1, 0.5),
        "backbone.2.bias": (0.1, 0.0),
        "neck.weight": (0.1, 0.0),  # layer norm
        "neck.bias": (0.1, 0.0),
        "head.weight": (0.1, 0.5),
        "head.bias": (0.1, 0.0),
        "scale": (0.1, 0.5),
    }  # frozen parameters are left out


def test_learned_loss_weights_get_no_weight_decay():
    net = nn.Module()
    net.head = nn.Linear(3, 2)
    net.criterion = CompositeLoss({"mse": nn.MSELoss(), "l1": nn.L1Loss()}, weighting="uncertainty")
    optimizer = OptimizerSpec.parse(adamw(lr=0.1, weight_decay=0.5)).build(net)
    settings = settings_by_name(net, optimizer)
    learned = [name for name in settings if name.startswith("criterion.")]
    assert learned  # the log-variances join the optimizer ...
    assert all(settings[name] == (0.1, 0.0) for name in learned)  # ... without decay
    assert settings["head.weight"] == (0.1, 0.5)


def test_decay_multipliers_and_lr_multipliers_are_configurable():
    net = Net()
    config = adamw(
        lr=0.1,
        weight_decay=0.5,
        norm_decay_mult=1.0,
        bias_decay_mult=0.5,
        lr_mult={"backbone": 0.1, "backbone.2": 0.5, "head": 0.0},
    )
    settings = settings_by_name(net, OptimizerSpec.parse(config).build(net))
    assert settings["backbone.0.weight"] == pytest.approx((0.01, 0.5))
    assert settings["backbone.1.weight"] == pytest.approx((0.01, 0.5))  # norms decay now
    assert settings["backbone.2.bias"] == pytest.approx((0.05, 0.25))  # longest prefix wins
    assert settings["head.weight"] == pytest.approx((0.0, 0.5))
    assert settings["neck.bias"] == pytest.approx((0.1, 0.5))  # a norm's bias is a norm's


def test_lr_mult_prefix_matches_whole_names_only():
    with pytest.raises(ConfigError, match=r"\['back'\].*backbone, neck, head, frozen"):
        param_groups(Net(), ParamGroupOptions(lr_mult={"back": 0.1}))


def test_a_factory_optimizer_gets_the_default_groups():
    net = Net()
    spec = OptimizerSpec.parse(functools.partial(torch.optim.SGD, lr=0.2, weight_decay=0.1))
    settings = settings_by_name(net, spec.build(net))
    assert settings["head.weight"] == (0.2, 0.1)
    assert settings["head.bias"] == (0.2, 0.0)


def test_the_groups_train_like_torch_adamw_given_the_same_groups_by_hand():
    torch.manual_seed(0)
    net, reference = Net(), Net()
    reference.load_state_dict(net.state_dict())
    ours = OptimizerSpec.parse(adamw(lr=0.1, weight_decay=0.5)).build(net)
    decayed = {"backbone.0.weight", "backbone.2.weight", "head.weight", "scale"}
    trainable = [(n, p) for n, p in reference.named_parameters() if p.requires_grad]
    theirs = torch.optim.AdamW(
        [
            {"params": [p for n, p in trainable if n in decayed], "weight_decay": 0.5},
            {"params": [p for n, p in trainable if n not in decayed], "weight_decay": 0.0},
        ],
        lr=0.1,
    )
    x = torch.randn(8, 3)
    for model, optimizer in ((net, ours), (reference, theirs)):
        for _ in range(3):
            optimizer.zero_grad()
            (model.head(model.neck(model.backbone(x))) * model.scale).square().mean().backward()
            optimizer.step()
    torch.testing.assert_close(net.state_dict(), reference.state_dict())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lr": -0.1}, "optimizer: option 'lr' must be a finite number >= 0.0, got -0.1"),
        ({"lr": float("nan")}, "optimizer: option 'lr' must be a finite number"),
        ({"weight_decay": -1.0}, "option 'weight_decay' must be a finite number >= 0.0"),
        ({"lr_mult": {"head": -2.0}}, "option 'lr_mult.head' must be a finite number >= 0.0"),
        ({"bias_decay_mult": -1.0}, "option 'bias_decay_mult' must be"),
    ],
)
def test_invalid_values_are_refused_when_parsed(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        OptimizerSpec.parse(adamw(**options))


def test_negative_lr_in_a_factory_is_refused():
    with pytest.raises(ValueError, match="'lr'"):
        OptimizerSpec.parse(functools.partial(torch.optim.SGD, lr=-1.0))


def test_unknown_optimizer_option_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown option 'betass'.*Did you mean 'betas'\?"):
        OptimizerSpec.parse(adamw(betass=[0.9, 0.99]))


def test_scheduler_none_and_empty_mean_no_scheduler():
    assert SchedulerSpec.parse(None) is None
    assert SchedulerSpec.parse({}) is None


def sgd(net):
    return torch.optim.SGD(net.parameters(), lr=0.5)


def test_null_run_length_is_filled_from_the_trainer():
    spec = SchedulerSpec.parse(
        {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "_partial_": True,
            "T_max": None,
            "interval": "epoch",
        }
    )
    config = spec.build(sgd(Net()), pl.Trainer(max_epochs=7, logger=False))
    assert config["scheduler"].T_max == 7
    assert config["interval"] == "epoch"


def test_null_max_lr_is_each_groups_lr():
    net = Net()
    optimizer = OptimizerSpec.parse(adamw(lr=0.1, lr_mult={"head": 0.5})).build(net)
    spec = SchedulerSpec.parse(
        {
            "_target_": "torch.optim.lr_scheduler.OneCycleLR",
            "max_lr": None,
            "total_steps": 10,
            "interval": "step",
        }
    )
    scheduler = spec.build(optimizer, pl.Trainer(max_epochs=1, logger=False))["scheduler"]
    assert sorted(g["max_lr"] for g in optimizer.param_groups) == pytest.approx(
        [0.05, 0.05, 0.1, 0.1]
    )
    assert scheduler.total_steps == 10


def test_unbounded_run_length_is_an_error():
    spec = SchedulerSpec.parse(
        {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": None}
    )
    with pytest.raises(ConfigError, match=r"set scheduler\.T_max or trainer\.max_epochs"):
        spec.build(sgd(Net()), pl.Trainer(max_epochs=-1, logger=False))


def test_unknown_scheduler_option_names_the_valid_ones():
    with pytest.raises(ConfigError, match="Did you mean 'step_size'"):
        SchedulerSpec.parse({"_target_": "torch.optim.lr_scheduler.StepLR", "stepsize": 3})


def test_a_recursively_instantiated_optimizer_config_keeps_its_group_options():
    """Hydra's recursive instantiation (as lightning-hydra-template does for its model config)
    turns the config into a partial that carries lossplug's options among its keywords."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.create(adamw(lr=0.1, weight_decay=0.5, lr_mult={"head": 0.1}))
    partial = instantiate(config)  # what the model's __init__ receives
    assert partial.keywords["lr_mult"] == {"head": 0.1}
    net = Net()
    settings = settings_by_name(net, OptimizerSpec.parse(partial).build(net))
    assert settings == settings_by_name(net, OptimizerSpec.parse(config).build(net))
    assert settings["head.weight"] == (pytest.approx(0.01), 0.5)
    assert settings["backbone.0.weight"] == (0.1, 0.5)
    assert settings["backbone.0.bias"] == (0.1, 0.0)


def test_a_recursively_instantiated_scheduler_config_keeps_lightnings_settings():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {
            "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
            "_partial_": True,
            "patience": 2,
            "interval": "epoch",
            "frequency": 1,
            "monitor": "val/loss",
        }
    )
    spec = SchedulerSpec.parse(instantiate(config))
    assert dict(spec.lightning) == {"interval": "epoch", "frequency": 1, "monitor": "val/loss"}
    assert "monitor" not in spec.factory.keywords and spec.factory.keywords["patience"] == 2


def test_a_partial_with_an_option_its_target_lacks_is_refused_at_once():
    """A parent config's value that sticks across a group swap: refused when the model is
    built, in one line, not when Lightning calls configure_optimizers."""
    factory = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, patience=3)
    with pytest.raises(ConfigError, match=r"scheduler: unknown option 'patience' for torch"):
        SchedulerSpec.parse(factory)
    with pytest.raises(ConfigError, match=r"Did you mean 'lr_mult'\?"):
        OptimizerSpec.parse(functools.partial(torch.optim.SGD, lr=0.1, lr_mul={"head": 2}))


def test_parameter_groups_are_named_for_the_learning_rate_monitor():
    groups = param_groups(
        Net(), ParamGroupOptions(lr_mult={"backbone": 0.1, "head": 0.1}, norm_decay_mult=0.5)
    )
    names = {group["name"]: len(group["params"]) for group in groups}
    assert names == {
        "backbone": 2,  # the two linear layers' weights
        "backbone/no_decay": 2,  # their biases
        "backbone/decay_x0.5": 2,  # the batch norm's weight and bias
        "default/decay_x0.5": 2,  # the layer norm (neck)
        "head": 1,  # same lr_mult as the backbone, a group of its own all the same
        "head/no_decay": 1,
        "default": 1,  # the free parameter "scale"
    }
