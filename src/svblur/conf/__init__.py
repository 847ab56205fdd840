"""svblur's Hydra configs, shipped inside the package (``pkg://svblur.conf``).

The entry points compose ``train.yaml``, ``eval.yaml`` and ``predict.yaml`` from here;
a user project adds its own groups or overrides ours with ``--config-dir DIR`` or
``hydra.searchpath=[file://DIR]``. The repository's top-level ``conf`` is a link to
this folder, not a copy. ``compare/`` holds the presets of ``svblur-compare``, read by
:func:`svblur.experiments.load_preset` (not a Hydra group, see :mod:`svblur.experiments.presets`).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["config_dir"]


def config_dir() -> str:
    """The folder of svblur's packaged configs (``svblur/conf``), e.g. for Hydra's compose API.

    Raises:
        FileNotFoundError: The installed package lacks its configs.
    """
    folder = Path(str(importlib.resources.files(__name__)))
    if not (folder / "train.yaml").is_file():
        raise FileNotFoundError(
            f"svblur's Hydra configs are missing from the installed package: no train.yaml in "
            f"'{folder}'; reinstall svblur (pip install .)"
        )
    return str(folder)
