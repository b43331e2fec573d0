"""When a criterion's inputs are checked, and the classic misuses found when they are.

- :mod:`~lossplug.input_checks.schedule`: :class:`InputChecks`, which batches are checked
  (``check_inputs="first"``, ``"always"`` or ``"never"``).
- :mod:`~lossplug.input_checks.misuse`: :func:`detect_misuse`, its errors and warnings, and
  the table of what it finds.
- :mod:`~lossplug.input_checks.terms`: the losses of a criterion (a composite's terms on
  their routes) and the input each receives.
- :mod:`~lossplug.input_checks.statistics`: :class:`BatchStats`, what is read from a batch,
  with one host synchronisation.
- :mod:`~lossplug.input_checks.findings`: the misuses each input space reveals, with their
  messages.
"""

from lossplug.input_checks.misuse import InputMisuseError, InputMisuseWarning, detect_misuse

__all__ = ["InputMisuseError", "InputMisuseWarning", "detect_misuse"]
