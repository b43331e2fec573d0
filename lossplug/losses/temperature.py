r"""A temperature trained with the model, as CLIP's (Radford et al. 2021).

"Learning Transferable Visual Models From Natural Language Supervision", ICML 2021, section
2.5: the temperature :math:`\tau` that divides the similarities is learned as the log of the
logits' scale, :math:`\log(1 / \tau)`, initialised from a given :math:`\tau`, and clipped so
that the logits are never scaled by more than 100.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lossplug._validation import check_bool, check_number

#: CLIP's clip: the logits are scaled by at most 100, so a learned temperature stays >= 0.01.
MAX_LOGIT_SCALE = 100.0


class LearnedTemperature(nn.Module):
    r"""A learnable temperature, stored as CLIP's ``logit_scale`` :math:`= \log(1 / \tau)`.

    Calling the module returns :math:`\tau = \exp(-\min(\text{logit\_scale},
    \log 100))`. The clamp is applied where the temperature is read and leaves the parameter
    as it is: while ``logit_scale`` exceeds :math:`\log 100` the temperature stays 0.01 and the
    parameter gets no gradient from the loss. The optimizer built by
    :class:`~lossplug.LossPlugMixin` gives it no weight decay, which would pull
    :math:`\tau` to 1.

    Args:
        temperature: the initial temperature, at least :math:`1 / 100`.
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(-math.log(temperature)))

    def forward(self) -> Tensor:
        """The current temperature, a 0-d tensor that carries the parameter's gradient."""
        return torch.exp(-self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)))


def check_temperature_options(loss: str, temperature: float, learn_temperature: bool) -> float:
    """Validate a temperature-scaled loss's ``temperature`` and ``learn_temperature`` options.

    Returns:
        ``temperature`` as a float.

    Raises:
        TypeError: for a non-number ``temperature`` or a non-bool ``learn_temperature``.
        ValueError: for a temperature that is not finite and > 0, or below
            ``1 / MAX_LOGIT_SCALE`` when it is learned (it would start clipped).
    """
    if not check_bool(loss, "learn_temperature", learn_temperature):
        return check_number(loss, "temperature", temperature, minimum=0.0, exclusive_minimum=True)
    lowest = 1.0 / MAX_LOGIT_SCALE
    temperature = check_number(loss, "temperature", temperature, minimum=0.0)
    if temperature < lowest:
        raise ValueError(
            f"{loss}: option 'temperature' must be >= {lowest} with learn_temperature=true "
            f"(a learned temperature is clipped there, as CLIP's), got {temperature!r}"
        )
    return temperature
