"""Hydra-style configs (``{"_target_": ..., option: value}``): checks, conversion, errors.

A config is checked against its target's signature *before* it is instantiated, so a typo
such as ``loss.gama=3`` fails at once with the valid options, not after a model was built.
A command line is checked before Hydra runs it (:func:`check_command_line`), and the errors
a user's config causes are printed as one line that says what to fix, not as a trace
(:func:`one_line_errors`); ``HYDRA_FULL_ERROR=1`` brings the trace back.

- :mod:`~lossplug.config.options`: :class:`ConfigError` and the option checks;
- :mod:`~lossplug.config.command_line`: :func:`check_command_line`, the keys and choices;
- :mod:`~lossplug.config.values`: whether a value fits what its option takes;
- :mod:`~lossplug.config.errors`: :func:`one_line_errors` and :func:`user_error`;
- :mod:`~lossplug.config.main`: :func:`lossplug_main`, ``hydra.main`` with both checks;
- :mod:`~lossplug.config.wording`: the closest name, a message on one line.
"""

from lossplug.config.command_line import OverrideSyntaxError, check_command_line
from lossplug.config.errors import one_line_errors, user_error
from lossplug.config.main import lossplug_main
from lossplug.config.options import ConfigError, check_options

__all__ = [
    "ConfigError",
    "OverrideSyntaxError",
    "check_command_line",
    "check_options",
    "lossplug_main",
    "one_line_errors",
    "user_error",
]
