"""Adds ``pkg://lossplug.conf`` to Hydra's config search path.

Hydra imports every module under the ``hydra_plugins`` namespace package, so once lossplug is
installed (editable or not) any Hydra app can write ``defaults: [loss: focal, optimizer: adamw]``
without copying a YAML file. The app's own configs come first in the search path, so a group
option it defines itself wins over lossplug's option of the same name.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class LossPlugSearchPathPlugin(SearchPathPlugin):
    """Appends lossplug's packaged config groups to the search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Append ``pkg://lossplug.conf``, after the app's own config directories."""
        search_path.append(provider="lossplug", path="pkg://lossplug.conf")
