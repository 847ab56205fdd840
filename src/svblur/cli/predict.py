"""``svblur-predict``: blur and semantic maps, and SR, of real photos with any checkpoint.

Examples:
    svblur-predict ckpt=logs/train/runs/<time>/checkpoints/last.ckpt input=photo.png output=out
    svblur-predict ckpt=BlindSR_NYUv2_BSR.pth input=photos/ output=results/

The checkpoint may be a stage-1 estimator (CMOS, its single-task variants, MANet; e.g. the
``last.ckpt`` of ``make train``), a stage-3 blind-SR checkpoint, a converted state dict or
one of the authors' released files. The network is rebuilt from what the checkpoint
records (svblur's training systems store it); files without that record use the model
config (``model=...``, default ``blind_sr``). For every readable image ``<stem>.<ext>`` of
``input`` (a file or a folder) it writes to ``output`` what the network computes:
``<stem>_sr.png`` (the x4 SR image; blind SR and GAN generators), ``<stem>_blur.png`` (the estimated blur
sigma map, colour-mapped, with a colour bar), ``<stem>_blur_x10.png`` (the same map as a
uint16 PNG holding ``round(sigma * 10)``, the data sets' format) and ``<stem>_seg.png``
(class map, palette PNG: pixel value = class index). Images are processed in overlapping
tiles on the device and blended on the CPU (:class:`svblur.inference.TiledPredictor`), so
any size works with bounded device memory. Unreadable files are reported and skipped; a
summary ends the run (and ``summary.json`` in ``output``). A checkpoint that needs more
than a photo (stage 2, SSR's kernel estimator) is refused with a message saying what to
use instead (:data:`svblur.inference.PREDICTABLE_KINDS`).

A diffusion checkpoint (SSR stage 3, :class:`svblur.models.DiffusionSR` trained with
``model.condition=svkr``) writes ``<stem>_sr.png`` sampled by reverse diffusion and
``<stem>_kernels.png`` (its SVKR's kernels): the SVKR runs on the whole image, the
denoiser in tiles of ``tile_size`` / ``tile_overlap`` LR pixels that share one noise
image (see :meth:`DiffusionSR.sample <svblur.models.DiffusionSR.sample>`). Steps, sampler
and seed are ``steps=20 sampler=ddim seed=1`` (else ``model.sampling`` when the model config
has it, else the network's defaults and seed 0); the same
seed gives the same image.

This module reads the config; the prediction is :func:`svblur.inference.predict_images`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from svblur.checkpoints import LoadedNetwork
from svblur.experiments.training import apply_extras, require
from svblur.inference import (
    DiffusionPredictor,
    find_inputs,
    load_for_prediction,
    num_classes_of,
    predict_images,
    read_rgb,
    resolve_device,
    save_outputs,
    unique_stems,
)
from svblur.ops.pictures import blur_colorbar_image

from ._common import CONFIG_PATH, exit_on_input_error, run_hydra_app

log = logging.getLogger("svblur")

__all__ = [
    "DiffusionPredictor",
    "blur_colorbar_image",
    "diffusion_options",
    "find_inputs",
    "load_model",
    "main",
    "num_classes_of",
    "predict",
    "read_rgb",
    "save_outputs",
]

# Their names before they moved to svblur.inference.
_device = resolve_device
_unique_stems = unique_stems


def load_model(cfg: DictConfig, ckpt: Path) -> LoadedNetwork:
    """The network of ``ckpt`` with its weights (:func:`svblur.inference.load_for_prediction`).

    Built from the checkpoint's own record when it has one (every checkpoint svblur's
    training systems write); else from ``cfg.model.net``, with the number of classes read
    from the checkpoint.
    """

    def config_from_cfg(state: Any) -> dict[str, Any]:
        classes = num_classes_of(state)
        if classes is not None and classes != cfg.data.num_classes:
            log.info("checkpoint has %d classes; using data.num_classes=%d", classes, classes)
            with open_dict(cfg):
                cfg.data.num_classes = classes
        net_cfg = require(cfg, "model.net", "a network config (model=blind_sr, model=cmos, ...)")
        return OmegaConf.to_container(net_cfg, resolve=True)  # type: ignore[return-value]

    return load_for_prediction(ckpt, fallback_config=config_from_cfg)


def diffusion_options(cfg: DictConfig) -> dict[str, Any]:
    """Sampling options of a diffusion checkpoint: the top-level ``steps`` / ``sampler`` /
    ``seed`` when set, else ``model.sampling`` where the model config has it, else the
    network's steps and sampler, seed 0 and the tiles of ``tile_size`` / ``tile_overlap``."""
    sampling = OmegaConf.select(cfg, "model.sampling", default=None) or {}

    def option(key: str, default: Any) -> Any:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            value = sampling.get(key)
        return default if value is None else value

    return {
        "steps": option("steps", None),
        "sampler": option("sampler", None),
        "seed": int(option("seed", 0)),
        "tile_size": int(cfg.tile_size),
        "tile_overlap": int(cfg.tile_overlap),
    }


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every image of ``cfg.input`` with ``cfg.ckpt``; write the results to ``cfg.output``.

    Returns:
        The summary of :func:`svblur.inference.predict_images`: ``kind``, ``processed``,
        ``failed``, ``ignored``, ``seconds``, ``tile_size``; for a diffusion checkpoint
        also ``steps``, ``sampler``, ``seed``, ``tile_overlap``.
    """
    apply_extras(cfg)
    ckpt = Path(require(cfg, "ckpt", "a checkpoint (ckpt=PATH)"))
    inputs, ignored = find_inputs(Path(require(cfg, "input", "an image file or folder")))
    out_dir = Path(require(cfg, "output", "the output folder (output=DIR)"))
    loaded = load_model(cfg, ckpt)
    log.info("%s: %s network %s", ckpt, loaded.kind.replace("_", " "), type(loaded.net).__name__)
    options = diffusion_options(cfg)
    return predict_images(
        loaded,
        inputs,
        out_dir,
        device=resolve_device(str(cfg.get("device", "auto"))),
        tile_size=options.pop("tile_size"),
        tile_overlap=options.pop("tile_overlap"),
        precision=str(cfg.precision),
        min_tile_size=int(cfg.min_tile_size),
        blur_vmax=cfg.blur_vmax,
        sampling=options,
        ignored=ignored,
    )


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
@exit_on_input_error("svblur-predict")
def _hydra_main(cfg: DictConfig) -> None:
    summary = predict(cfg)
    if not summary["processed"] and summary["failed"]:
        raise SystemExit(1)


def main() -> None:
    """Console-script entry point."""
    run_hydra_app(_hydra_main)


if __name__ == "__main__":
    main()
