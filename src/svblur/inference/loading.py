"""Loading the network of any checkpoint for prediction, by what it computes (its kind).

A photo gives prediction an LR image and nothing else, so only some kinds can run on it
(:data:`PREDICTABLE_KINDS`): stage-1 maps (``blur_semantics``), blind SR (``blind_sr``,
with its maps where the network gives them), a GAN generator (``gan_sr``: the SR image)
and diffusion SR (``diffusion_sr``, with its SVKR). The other kinds need inputs a photo
does not have; :func:`load_for_prediction` refuses them with a message naming the
checkpoint and what to use instead.

A :class:`~svblur.models.LatentDiffusionSR` checkpoint holds the trainable parts only: its
frozen UNet and VAE are re-read from the Stable Diffusion folder the checkpoint records,
which must still be there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from svblur.checkpoints import SYSTEM_KINDS, LoadedNetwork, load_network
from svblur.errors import InputError

__all__ = ["PREDICTABLE_KINDS", "load_for_prediction", "num_classes_of"]

#: The kinds (see :mod:`svblur.checkpoints.kinds`) whose network predicts from an LR image.
PREDICTABLE_KINDS: tuple[str, ...] = ("blur_semantics", "blind_sr", "gan_sr", "diffusion_sr")

# Why the other kinds cannot run on a photo, and what to predict with instead.
_NOT_PREDICTABLE = {
    "non_blind_sr": (
        "a stage-2 (non-blind SR) checkpoint needs blur and semantic maps as input, which "
        "a photo does not have; predict with a stage-3 (blind SR) checkpoint, or with a "
        "stage-1 checkpoint for the maps"
    ),
    "kernel_estimation": (
        "an SSR stage-1 kernel estimator (DKENet) needs a depth map as well as the photo; "
        "predict with an SVKR written by svblur.systems.assemble_svkr (give it a depth "
        "estimator that reads images) or with a stage-3 diffusion checkpoint"
    ),
    "kernel_regression": (
        "a kernel-regression (SVKR evaluation) checkpoint holds the SSR stages, not one "
        "network to run; write the SVKR as one file with svblur.systems.assemble_svkr and "
        "predict with that"
    ),
    "discriminator": (
        "a GAN discriminator (svblur-convert writes them from UNetDiscriminatorSN files) "
        "scores images, it does not super-resolve them; predict with the generator, and "
        "give this file to training as model.anchor_discriminator_ckpt"
    ),
}

# Keys of the last classifier layer, whose rows are the semantic classes.
_CLASS_KEYS = ("output_heads.seg.classifier.weight", "predict.seg.last_layer.3.weight")


def num_classes_of(state: Mapping[str, torch.Tensor]) -> int | None:
    """Number of semantic classes of a (stage-3 or stage-1) state dict, if it says."""
    for key, value in state.items():
        if key.endswith(_CLASS_KEYS):
            return int(value.shape[0])
    return None


def load_for_prediction(
    path: str | Path,
    fallback_config: Mapping[str, Any]
    | Callable[[Mapping[str, torch.Tensor]], Mapping[str, Any]]
    | None = None,
) -> LoadedNetwork:
    """The network of ``path`` with its weights, in eval mode, if a photo is enough to run it.

    Built by :func:`svblur.checkpoints.load_network`: from the checkpoint's own record when
    it has one (every checkpoint svblur's training systems write), else from
    ``fallback_config``.

    Args:
        path: The checkpoint.
        fallback_config: Network config for a checkpoint that records none, or a function
            of its state dict that returns one.

    Raises:
        InputError: The checkpoint's kind is not in :data:`PREDICTABLE_KINDS`, or its
            network needs more than an LR image (a diffusion SR conditioned on
            ground-truth kernels, a DKENet); the message names the checkpoint.
        CheckpointError: As :func:`~svblur.checkpoints.load_network`.
    """
    from svblur.models import DKENet  # here: the tiling alone needs no networks

    loaded = load_network(path, fallback_config=fallback_config)
    kind = loaded.kind
    if kind in _NOT_PREDICTABLE:
        raise InputError(f"{path}: {_NOT_PREDICTABLE[kind]}")
    if kind not in PREDICTABLE_KINDS:
        known = "" if kind in SYSTEM_KINDS else " (an unknown kind)"
        raise InputError(
            f"{path}: a checkpoint of kind {kind!r}{known} cannot predict from a photo; "
            f"prediction runs the kinds {', '.join(PREDICTABLE_KINDS)}"
        )
    if isinstance(loaded.net, DKENet):  # a file without a record, its kind guessed
        raise InputError(f"{path}: {_NOT_PREDICTABLE['kernel_estimation']}")
    if kind == "diffusion_sr" and getattr(loaded.net, "estimator", None) is None:
        raise InputError(
            f"{path}: this diffusion SR was trained on ground-truth kernels and depth "
            "(model.condition=ground_truth), which a photo does not have; predict with a "
            "checkpoint trained with model.condition=svkr"
        )
    return loaded
