"""Every ``Example:`` in lossplug's docstrings runs, and every catalogue loss has one."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lossplug
from lossplug import losses
from lossplug.losses.base import LossModule
from lossplug.registry import available_losses

MODULES = sorted(info.name for info in pkgutil.walk_packages(lossplug.__path__, prefix="lossplug."))


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


CATALOGUE = sorted(
    (
        obj
        for obj in vars(losses).values()
        if isinstance(obj, type) and issubclass(obj, LossModule) and obj.name in available_losses()
    ),
    key=lambda cls: cls.__name__,
)


def test_the_catalogue_is_found():
    assert {cls.name for cls in CATALOGUE} >= {"mse", "cross_entropy", "dice", "triplet"}


@pytest.mark.parametrize("loss", CATALOGUE, ids=lambda cls: cls.__name__)
def test_every_catalogue_loss_shows_an_example(loss):
    doc = loss.__doc__ or ""
    assert "Example:" in doc and ">>> " in doc
