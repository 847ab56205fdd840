"""Comparison presets: ``conf/compare/<preset>.yaml`` merged with ``key=value`` arguments.

A preset says what ``svblur-compare`` runs: ``seeds``, ``models`` (label -> the model's
``svblur-train`` overrides), the ``overrides`` shared by every model, ``extra`` overrides
appended to every run, the blind-SR stages ``sr`` (or ``null``), ``only`` (a subset of
the labels), ``out_dir``, ``log_dir`` and ``paper`` (the table's columns and the orderings
checked, :data:`svblur.experiments.claims.PAPERS`; ``cmos`` when absent).

Why ``conf/compare/`` is not a Hydra config group (and ``svblur-compare`` not a Hydra
app), although its files sit among the groups of ``train.yaml``:

- A preset's values are lists of ``svblur-train`` overrides, and the command line edits
  them with list items that contain ``=``: ``'overrides=[trainer.max_epochs=1]'``,
  ``'extra=[data.batch_size=2]'``. Hydra's override grammar rejects ``=`` in an unquoted
  list item, so these documented command lines would break (they would need nested
  quotes, ``'extra=["data.batch_size=2"]'``); an OmegaConf dotlist reads them as they are.
- The command line selects a preset with ``preset=NAME``. A Hydra group is selected by
  its folder's name, so the presets would have to move to a folder ``preset/``: among the
  groups of ``train.yaml``, where ``svblur-train +preset=small`` would merge one into a
  training config, or under a config root of their own; the Makefile and README name
  them ``conf/compare/<preset>.yaml``.
- The runner composes each training job with Hydra's compose API, which uses Hydra's
  global state; in a ``@hydra.main`` app that state belongs to the app (its
  ``HydraConfig``, output folder and logging), and every job would replace it.

A preset is a plain YAML file, loaded by :func:`load_preset`, which checks it and names
the fix of what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from svblur.conf import config_dir
from svblur.errors import InputError
from svblur.experiments.claims import PAPERS

__all__ = ["DEFAULT_PRESET", "load_preset", "selected_models"]

#: The preset used when the arguments name none.
DEFAULT_PRESET = "small"


def load_preset(args: Sequence[str]) -> DictConfig:
    """Load ``conf/compare/<preset>.yaml`` and merge the ``key=value`` ``args`` into it.

    Args:
        args: Command-line arguments such as ``["preset=small", "seeds=[0,1]"]``; every
            argument but ``preset`` is merged into the preset as an OmegaConf dotlist.

    Returns:
        The preset, with ``preset`` set to its name.

    Raises:
        ValueError: An argument is not ``key=value``, or the merged preset is incomplete.
        FileNotFoundError: No preset of that name (the message lists the known ones).
    """
    preset = DEFAULT_PRESET
    rest = []
    for arg in args:
        if "=" not in arg:
            raise InputError(
                f"svblur-compare takes key=value arguments (e.g. preset=small seeds=[0,1]), "
                f"got {arg!r}"
            )
        key, value = arg.split("=", 1)
        if key == "preset":
            preset = value
        else:
            rest.append(arg)
    folder = Path(config_dir()) / "compare"
    path = folder / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise FileNotFoundError(f"no comparison preset {preset!r} ({path}); known: {known}")
    cfg = OmegaConf.load(path)
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(rest))
    with open_dict(cfg):
        cfg.preset = preset
    for key in ("seeds", "models", "overrides"):
        if not cfg.get(key):
            raise InputError(f"comparison preset {preset!r} needs a non-empty '{key}'")
    paper = cfg.get("paper")
    if paper is not None and paper not in PAPERS:
        raise InputError(
            f"comparison preset {preset!r}: paper={paper!r} is unknown; known: {sorted(PAPERS)}"
        )
    sr = cfg.get("sr")
    if sr:
        for key in ("stage2", "stage3"):
            if not sr.get(key):
                raise InputError(
                    f"comparison preset {preset!r}: sr.{key} must list the stage's "
                    f"svblur-train overrides (e.g. [model=rrdb_sft, trainer.max_epochs=4]), "
                    "or set sr=null to skip blind SR"
                )
        unknown = sorted(set(sr.get("blur_only") or []) - set(cfg.models))
        if unknown:
            raise InputError(
                f"sr.blur_only={unknown}: not in the preset's models {list(cfg.models)}"
            )
    return cfg


def selected_models(cfg: DictConfig) -> list[str]:
    """The preset's model labels that the comparison runs (``only``, else all), in order."""
    only = list(cfg.get("only") or [])
    return [m for m in cfg.models if not only or m in only]
