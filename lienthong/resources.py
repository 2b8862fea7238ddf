"""Files the project ships beside its code: XSDs, the broker config, example topologies.

In the repository they live at the top level (``schemas/``, ``config/mosquitto/``,
``config/topologies/``) for people to read; an installed wheel carries them inside the package
(``lienthong/_schemas`` and so on, see ``force-include`` in pyproject.toml).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

_REPOSITORY = Path(__file__).resolve().parents[1]
_INSTALLED = {
    "schemas": "_schemas",
    "config/mosquitto": "_mosquitto",
    "config/topologies": "_topologies",
}


def shipped_dir(name: str) -> Path:
    """The folder ``name`` (a key of the table above) wherever this installation keeps it."""
    installed = importlib.resources.files("lienthong") / _INSTALLED[name]
    if installed.is_dir():
        return Path(str(installed))
    return _REPOSITORY / name
