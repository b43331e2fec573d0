"""How the config errors are worded: the closest valid name, a message on one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option closest to ``word``, or ``None`` if none is close."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return close[0] if close else None


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the option ``x`` closest to ``word``; ``""`` if none is."""
    close = closest(word, options)
    return f" Did you mean {close!r}?" if close else ""


def one_line(message: str) -> str:
    """A multi-line message on one line, without OmegaConf's key/type footer."""
    footer = ("full_key:", "object_type=", "reference_type=", "Config search path", "provider=")
    lines = (line.strip() for line in message.splitlines())
    return " ".join(line for line in lines if line and not line.startswith(footer))
