"""Building a network from its config (``{"_target_": "pkg.Class", **kwargs}``) without Hydra.

The network classes are found by name, so this package never imports the packages that
define them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from torch import nn

from svblur.errors import InputError

__all__ = ["build_network"]


def build_network(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate a network config ``{"_target_": "pkg.Class", **kwargs}`` without Hydra.

    Nested mappings with a ``_target_`` are built first (sub-networks); other keys starting
    with ``_`` are ignored. Only ``nn.Module`` classes are instantiated, so a config read
    from a checkpoint cannot call arbitrary functions.

    Raises:
        InputError: No ``_target_``, a target that does not import, or one that is not an
            ``nn.Module`` class.
    """

    def build(value: Any) -> Any:
        if isinstance(value, Mapping) and "_target_" in value:
            return build_network(value)
        if isinstance(value, list):
            return [build(v) for v in value]
        return value

    target = config.get("_target_")
    if not isinstance(target, str) or "." not in target:
        raise InputError(f"network config: expected '_target_: package.Class', got {target!r}")
    module_name, _, attribute = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InputError(f"network config: cannot import _target_ {target!r} ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise InputError(f"network config: _target_ {target!r} is not an nn.Module class")
    kwargs = {k: build(v) for k, v in config.items() if not k.startswith("_")}
    return cls(**kwargs)
