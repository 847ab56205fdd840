"""Prediction over a set of images with a loaded network: one image at a time, each
written as soon as it is done, a failed image reported and skipped, a summary at the end."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from svblur.checkpoints import LoadedNetwork

from .diffusion import DiffusionPredictor
from .inputs import read_rgb, unique_stems
from .loading import num_classes_of
from .outputs import save_outputs, write_summary
from .tiling import TiledPredictor

__all__ = ["network_predictor", "predict_images", "resolve_device"]

log = logging.getLogger(__name__)

Predictor = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def resolve_device(name: str) -> torch.device:
    """The device called ``name``; ``"auto"``: CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _maps(net: nn.Module) -> Predictor:
    """``lr -> dict`` of the maps prediction writes, from a network's output."""

    def run(lr: torch.Tensor) -> dict[str, torch.Tensor]:
        out = net(lr)
        if isinstance(out, torch.Tensor):  # a plain SR network (RRDBNet, a GAN generator)
            return {"sr": out}
        maps = {key: out[key] for key in ("sr", "blur", "seg") if key in out}
        if "kernels" in out:  # on the LR grid (a head that upscaled by nearest: subsample)
            kernels = out["kernels"]
            step = kernels.shape[-1] // lr.shape[-1]
            maps["kernels"] = kernels[..., ::step, ::step] if step > 1 else kernels
        return maps

    return run


def network_predictor(
    loaded: LoadedNetwork,
    device: torch.device,
    tile_size: int = 256,
    tile_overlap: int = 32,
    precision: str = "fp32",
    min_tile_size: int = 32,
    sampling: Mapping[str, Any] | None = None,
) -> TiledPredictor | DiffusionPredictor:
    """What runs ``loaded``'s network on one LR image, by its kind.

    A ``diffusion_sr`` network samples (:class:`DiffusionPredictor`, denoiser in tiles of
    ``tile_size`` / ``tile_overlap``); any other runs in tiles (:class:`TiledPredictor`).

    Args:
        loaded: The network (see :func:`~svblur.inference.load_for_prediction`), moved to
            ``device`` by the caller.
        device: Where the network runs.
        tile_size: Tile side in LR pixels.
        tile_overlap: Overlap of neighbouring tiles in LR pixels.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (tiled prediction).
        min_tile_size: Smallest tile tried after out-of-memory errors (tiled prediction).
        sampling: ``steps``, ``sampler``, ``seed`` of diffusion sampling (``None`` values
            and missing keys: the network's defaults, seed 0).
    """
    if loaded.kind == "diffusion_sr":
        options = {"steps": None, "sampler": None, "seed": 0, **(sampling or {})}
        options.update(tile_size=int(tile_size), tile_overlap=int(tile_overlap))
        return DiffusionPredictor(loaded.net, options, device)  # type: ignore[arg-type]
    return TiledPredictor(
        _maps(loaded.net),
        scale=int(loaded.net.scale),
        tile_size=int(tile_size),
        overlap=int(tile_overlap),
        device=device,
        precision=precision,
        min_tile_size=int(min_tile_size),
        lr_keys=("kernels",),
    )


def predict_images(
    loaded: LoadedNetwork,
    inputs: Sequence[Path],
    out_dir: Path,
    device: torch.device,
    tile_size: int = 256,
    tile_overlap: int = 32,
    precision: str = "fp32",
    min_tile_size: int = 32,
    blur_vmax: float | None = None,
    sampling: Mapping[str, Any] | None = None,
    ignored: Sequence[Path] = (),
) -> dict[str, Any]:
    """Predict every image of ``inputs`` with ``loaded``'s network; write the results.

    The network is moved to ``device``. Each image's files are written by
    :func:`~svblur.inference.save_outputs` (named by :func:`unique_stems`); an image that
    cannot be read or predicted is logged and skipped. The summary is also written to
    ``out_dir/summary.json``. The other arguments are those of :func:`network_predictor`,
    and ``blur_vmax`` that of :func:`~svblur.inference.save_outputs`.

    Args:
        ignored: Files that were left out (not images), listed in the summary.

    Returns:
        Summary: ``kind`` (what the checkpoint's network computes), ``processed`` (names),
        ``failed`` (name -> reason), ``ignored`` (names), ``seconds``, ``tile_size``
        (smallest tile size used); for a diffusion checkpoint also ``steps``,
        ``sampler``, ``seed``, ``tile_overlap``.
    """
    net = loaded.net.to(device)
    scale = int(net.scale)
    num_classes = num_classes_of(net.state_dict())
    predictor = network_predictor(
        loaded, device, tile_size, tile_overlap, precision, min_tile_size, sampling
    )
    summary: dict[str, Any] = {
        **getattr(predictor, "options", {}),
        "kind": loaded.kind,
        "processed": [],
        "failed": {},
        "ignored": [p.name for p in ignored],
        "tile_size": int(tile_size),
    }
    start = time.perf_counter()
    stems = unique_stems(list(inputs))
    for path in inputs:
        try:
            lr = read_rgb(path)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            log.warning("skipping %s: cannot read it as an image (%s)", path.name, err)
            summary["failed"][path.name] = f"unreadable: {err}"
            continue
        try:
            t0 = time.perf_counter()
            result = predictor(lr)
            save_outputs(
                result, out_dir, stems[path], num_classes, blur_vmax, lr=lr[0], scale=scale
            )
        except Exception as err:  # one bad image must not abort the batch
            log.exception("failed on %s", path.name)
            summary["failed"][path.name] = f"{type(err).__name__}: {err}"
            continue
        summary["tile_size"] = min(summary["tile_size"], predictor.used_tile_size)
        summary["processed"].append(path.name)
        log.info(
            "%s: %dx%d -> %dx%d in %.1f s",
            path.name,
            lr.shape[-1],
            lr.shape[-2],
            lr.shape[-1] * scale,
            lr.shape[-2] * scale,
            time.perf_counter() - t0,
        )
    summary["seconds"] = round(time.perf_counter() - start, 3)
    write_summary(summary, out_dir)
    log.info(
        "done: %d processed, %d failed, %d ignored (not image files) in %.1f s; results in %s",
        len(summary["processed"]),
        len(summary["failed"]),
        len(summary["ignored"]),
        summary["seconds"],
        out_dir,
    )
    for name, reason in summary["failed"].items():
        log.info("  failed: %s (%s)", name, reason)
    return summary
