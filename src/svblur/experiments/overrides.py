"""``svblur-train`` jobs as overrides: values written in Hydra's grammar, configs composed.

Every run of a comparison is an ``svblur-train`` command line; :func:`hydra_value` writes
values (e.g. a stage-1 network's config) so that Hydra reads back the same value, and
:func:`compose_train_config` composes the job's config as ``svblur-train`` would.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, open_dict

from svblur.conf import config_dir

__all__ = ["compose_train_config", "hydra_value"]

_PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = ("true", "false", "null", "nan", "inf")


def hydra_value(value: Any) -> str:
    """Write ``value`` (nested dicts and lists of plain values) in Hydra's override grammar.

    Strings are quoted unless they are plain names that Hydra reads back as the same
    string, so ``hydra_value({"a": [1, "x y"]})`` is ``{a:[1,"x y"]}``. Dict keys must be
    plain names (Hydra does not accept quoted keys).

    Raises:
        ValueError: Hydra cannot read the value back (a key that is not a plain name, a
            string with both quote characters).
    """
    if isinstance(value, (dict, DictConfig)):
        for key in value:
            if not (_PLAIN_KEY.fullmatch(str(key)) and str(key).lower() not in _KEYWORDS):
                raise ValueError(f"cannot write the dict key {key!r} as a Hydra override")
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN_STRING.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    if '"' not in text:
        return f'"{text}"'
    if "'" not in text:
        return f"'{text}'"
    raise ValueError(f"cannot write {text!r} as a Hydra override value (both quote characters)")


def compose_train_config(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/train.yaml`` with ``overrides`` as ``svblur-train`` does, outside a Hydra run.

    Args:
        overrides: ``svblur-train`` overrides.
        output_dir: The job's output folder (checkpoints, CSV logs).

    Returns:
        The job's config, its ``paths`` pointing at ``output_dir``; the Hydra config of
        the job is set (``HydraConfig``) for what reads it while training.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent)
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg
