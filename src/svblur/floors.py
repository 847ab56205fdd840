"""The floors of svblur: each subpackage sits on one floor and imports only from lower
floors (never from its own floor's other packages, nor from a higher one).

This list is the one place the rule is written; ``tests/test_floors.py`` enforces it and
``docs/architecture.md`` draws it.
"""

from __future__ import annotations

__all__ = ["FLOORS", "floor_of"]

#: Lowest first. A name is a subpackage or top-level module of ``svblur``.
FLOORS: tuple[tuple[str, ...], ...] = (
    # errors every layer raises; the Hydra configs (YAML, read as package data)
    ("errors", "conf", "floors"),
    # files (atomic writes, images) and tensor helpers
    ("io", "ops"),
    # reading, recording, converting and exporting checkpoints; builds networks by name
    ("checkpoints",),
    # blur synthesis, image metrics, network building blocks
    ("degradation", "metrics", "nn"),
    # data sets and DataModules; networks (plain nn.Module)
    ("data", "models"),
    # LightningModules, losses, callbacks
    ("systems",),
    # prediction from any checkpoint: loading by kind, tiling, sampling, writing outputs
    ("inference",),
    # comparisons, reports, the paper's claims
    ("experiments",),
    # command-line entry points
    ("cli",),
)


def floor_of(package: str) -> int:
    """The floor (0 = lowest) of ``svblur.<package>``.

    Raises:
        KeyError: ``package`` is on no floor (a new package must be added to
            :data:`FLOORS`).
    """
    for index, names in enumerate(FLOORS):
        if package in names:
            return index
    raise KeyError(
        f"svblur.{package} is on no floor: add it to svblur.floors.FLOORS "
        f"(floors: {[list(names) for names in FLOORS]})"
    )
