"""Errors inside the run: one line for the user's mistakes, a trace for the rest."""

from __future__ import annotations

import linecache
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException
from omegaconf.errors import OmegaConfBaseException

from lossplug.config.command_line import OverrideSyntaxError
from lossplug.config.wording import one_line


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Print an error the user's config or command line caused as one line, and exit.

    ``Error: <message>`` goes to stderr and the process exits with code 2 for an override
    that cannot be parsed (a usage error) and 1 otherwise. Other exceptions, and every
    exception when ``HYDRA_FULL_ERROR=1`` is set (as Hydra's own), pass through with their
    trace. Wrap a Hydra task's body in it, and :func:`check_command_line` before Hydra runs.

    Yields:
        Nothing; the block runs inside it.
    """
    try:
        yield
    except Exception as error:
        message = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else user_error(error)
        if message is None:
            raise
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(2 if isinstance(error, OverrideSyntaxError) else 1)


def user_error(error: BaseException) -> str | None:
    """The one-line message of an error the user's config caused; ``None`` for anything else.

    These are: lossplug's own errors (raised by a ``raise`` statement in lossplug; their
    messages name the option, what was expected and what came), a config's target refusing
    its arguments (a ``ValueError``, ``TypeError`` or ``ImportError`` out of Hydra's
    ``instantiate``), Lightning's ``MisconfigurationException`` and OmegaConf's errors (an
    interpolation that does not resolve). Anything else is a bug and keeps its trace.

    Args:
        error: the exception.

    Returns:
        The message, with the config key it concerns where lossplug's message does not
        name it, or ``None``.
    """
    from_target = isinstance(error, InstantiationException)
    where, cause = _instantiation_cause(error)
    if isinstance(cause, OmegaConfBaseException):
        first_line = (str(cause).splitlines() or [type(cause).__name__])[0]
        return f"{cause.full_key}: {first_line}" if cause.full_key else first_line
    message = one_line(str(cause)) or type(cause).__name__
    if _raised_by_lossplug(cause):
        return message
    refused = from_target and isinstance(cause, (ValueError, TypeError, ImportError))
    if not (refused or _is_lightning_misconfiguration(cause)):
        return None
    return f"{where}: {message}" if where else message


def _instantiation_cause(error: BaseException) -> tuple[str | None, BaseException]:
    """The error under Hydra's ``InstantiationException`` wrappers, and the innermost key."""
    where = None
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        found = re.search(r"full_key: (\S+)\s*$", str(error))
        where = found.group(1) if found else where
        error = error.__cause__
    return where, error


def _raised_by_lossplug(error: BaseException) -> bool:
    """Whether a ``raise`` statement in lossplug's code raised ``error``."""
    trace = error.__traceback__
    if trace is None:
        return False
    while trace.tb_next is not None:
        trace = trace.tb_next
    module = trace.tb_frame.f_globals.get("__name__", "")
    if module.split(".")[0] != "lossplug":
        return False
    line = linecache.getline(trace.tb_frame.f_code.co_filename, trace.tb_lineno)
    return line.lstrip().startswith("raise")


def _is_lightning_misconfiguration(error: BaseException) -> bool:
    exceptions = sys.modules.get("lightning.fabric.utilities.exceptions")
    return exceptions is not None and isinstance(error, exceptions.MisconfigurationException)
