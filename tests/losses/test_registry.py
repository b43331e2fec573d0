import pytest
import torch
from torch import nn

import lossplug
from lossplug.registry import _REGISTRY


def test_unknown_name_lists_known_ones_and_suggests():
    with pytest.raises(
        lossplug.UnknownLossError,
        match=r"unknown loss 'focall'\. Did you mean 'focal'\? Available losses: .*cross_entropy",
    ):
        lossplug.build_loss("focall")


def test_build_by_name_passes_options():
    loss = lossplug.build_loss("huber", delta=2.0)
    assert isinstance(loss, lossplug.losses.HuberLoss) and loss.delta == 2.0


def test_plain_callable_and_foreign_module_plug_in():
    def mean_cubed_error(pred, target):
        return ((pred - target) ** 3).abs().mean()

    pred, target = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    wrapped = lossplug.build_loss(mean_cubed_error)
    assert wrapped(pred, target).item() == pytest.approx(4.5)
    assert list(wrapped.components(pred, target)) == ["mean_cubed_error"]
    torch_loss = lossplug.build_loss(nn.SmoothL1Loss())
    assert wrapped is not torch_loss and list(torch_loss.components(pred, target)) == [
        "smoothl1loss"
    ]
    assert torch_loss(pred, target).item() == pytest.approx((0.5 + 1.5) / 2)


def test_register_own_loss_and_refuse_silent_overwrite():
    class Doubled(lossplug.LossModule):
        name = "doubled_mse_test"

        def forward(self, pred, target):
            return 2 * lossplug.functional.mse(pred, target, reduction=self.reduction)

    try:
        lossplug.register_loss("doubled_mse_test", Doubled)
        assert "doubled_mse_test" in lossplug.available_losses()
        built = lossplug.build_loss("doubled_mse_test", reduction="sum")
        assert built(torch.ones(3), torch.zeros(3)).item() == 6.0
        with pytest.raises(
            ValueError, match=r"a loss named 'doubled_mse_test' is already registered"
        ):
            lossplug.register_loss("doubled_mse_test", nn.MSELoss)
    finally:
        _REGISTRY.pop("doubled_mse_test", None)


def test_options_with_a_built_loss_are_refused():
    with pytest.raises(
        TypeError, match=r"build_loss: options \['delta'\] can only be given with a registered name"
    ):
        lossplug.build_loss(nn.MSELoss(), delta=1.0)
