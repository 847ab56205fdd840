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
``<stem>_sr.png`` (the x4 SR image; blind SR only), ``<stem>_blur.png`` (the estimated blur
sigma map, colour-mapped, with a colour bar), ``<stem>_blur_x10.png`` (the same map as a
uint16 PNG holding ``round(sigma * 10)``, the data sets' format) and ``<stem>_seg.png``
(class map, palette PNG: pixel value = class index). Images are processed in overlapping
tiles on the device and blended on the CPU (:class:`svblur.inference.TiledPredictor`), so
any size works with bounded device memory. Unreadable files are reported and skipped; a
summary ends the run (and ``summary.json`` in ``output``).

A diffusion checkpoint (SSR stage 3, :class:`svblur.models.DiffusionSR` trained with
``model.condition=svkr``) writes ``<stem>_sr.png`` sampled by reverse diffusion and
``<stem>_kernels.png`` (its SVKR's kernels): the SVKR runs on the whole image, the
denoiser in tiles of ``tile_size`` / ``tile_overlap`` LR pixels that share one noise
image (see :meth:`DiffusionSR.sample <svblur.models.DiffusionSR.sample>`). Steps, sampler
and seed are ``steps=20 sampler=ddim seed=1`` (else ``model.sampling`` when the model config
has it, else the network's defaults and seed 0); the same
seed gives the same image.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image, ImageDraw, UnidentifiedImageError

from svblur.degradation import blur_map_to_png
from svblur.errors import InputError
from svblur.experiments.training import apply_extras, require
from svblur.inference import TiledPredictor
from svblur.io import IMAGE_SUFFIXES, atomic_path, read_image
from svblur.models import DKENet
from svblur.models.checkpoints import LoadedNetwork, load_network
from svblur.systems.visualize import colorize_scalar, kernel_field_picture, palette

from ._common import CONFIG_PATH, exit_on_input_error, run_hydra_app

log = logging.getLogger("svblur")

_CLASS_KEYS = ("output_heads.seg.classifier.weight", "predict.seg.last_layer.3.weight")


def find_inputs(path: Path) -> tuple[list[Path], list[Path]]:
    """Image files of ``path`` (a file or a folder, sorted) and the other files left out."""
    if path.is_file():
        return [path], []
    if not path.is_dir():
        raise FileNotFoundError(f"input: no file or folder at '{path}'")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as ``(1, 3, h, w)`` float32 RGB in ``[0, 1]`` (16-bit files keep precision).

    Raises:
        InputError: The file is not a readable image (see :func:`svblur.io.read_image`).
    """
    array = read_image(path, "rgb")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def blur_colorbar_image(sigma: torch.Tensor, vmax: float) -> Image.Image:
    """Colour-mapped sigma map ``(H, W)`` with a labelled colour bar on the right."""
    height, width = sigma.shape
    rgb = colorize_scalar(sigma[None, None].clamp(min=0), vmax)[0]
    bar_w = max(12, width // 40)
    label_w = 7 * 6 + 8
    ramp = torch.linspace(vmax, 0.0, height).view(1, 1, height, 1).expand(1, 1, height, bar_w)
    bar = colorize_scalar(ramp, vmax)[0]
    canvas = torch.ones(3, height, width + 6 + bar_w + label_w)
    canvas[:, :, :width] = rgb
    canvas[:, :, width + 6 : width + 6 + bar_w] = bar
    array = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    draw = ImageDraw.Draw(image)
    x = width + 6 + bar_w + 3
    for frac in (0.0, 0.5, 1.0):
        y = int(round((1 - frac) * (height - 1)))
        draw.line([(x - 3, y), (x, y)], fill=(0, 0, 0))
        draw.text(
            (x + 2, min(max(0, y - 5), max(0, height - 11))), f"{frac * vmax:.1f}", fill=(0, 0, 0)
        )
    if height > 40:
        draw.text((x + 2, height // 4), "sigma", fill=(0, 0, 0))
        draw.text((x + 2, height // 4 + 11), "(px)", fill=(0, 0, 0))
    return image


def save_outputs(
    result: dict[str, torch.Tensor],
    out_dir: Path,
    stem: str,
    num_classes: int | None,
    blur_vmax: float | None,
    lr: torch.Tensor | None = None,
    scale: int = 4,
) -> list[Path]:
    """Write what ``result`` holds of one image: SR image, blur map (colour + uint16 x10),
    class map and a picture of an estimated kernel field (``kernels`` ``(k*k, h, w)`` on
    the LR grid of ``lr``, drawn over the SR image, or the LR image enlarged); each file
    appears complete or not at all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "sr" in result:
        sr = (result["sr"].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = out_dir / f"{stem}_sr.png"
        with atomic_path(path) as temp:
            Image.fromarray(sr).save(temp, format="PNG")
        written.append(path)
    if "blur" in result:
        sigma = result["blur"][0].clamp(min=0)
        vmax = float(blur_vmax) if blur_vmax else max(1.0, float(sigma.max()))
        path = out_dir / f"{stem}_blur.png"
        with atomic_path(path) as temp:
            blur_colorbar_image(sigma, vmax).save(temp, format="PNG")
        written.append(path)
        path = out_dir / f"{stem}_blur_x10.png"
        blur_map_to_png(sigma.clamp(max=6553.5).numpy(), path)
        written.append(path)
    if "seg" in result:
        labels = result["seg"].clamp(0, 255).numpy().astype(np.uint8)
        seg = Image.fromarray(labels, mode="P")
        classes = min(num_classes or int(labels.max()) + 1, 256)
        colours = (palette(classes) * 255).round().to(torch.uint8).flatten().tolist()
        seg.putpalette(colours + [0] * (768 - len(colours)))
        path = out_dir / f"{stem}_seg.png"
        with atomic_path(path) as temp:
            seg.save(temp, format="PNG")
        written.append(path)
    if "kernels" in result:
        kernels = result["kernels"]
        k = round(kernels.shape[0] ** 0.5)
        if "sr" in result:
            image = result["sr"].clamp(0, 1)
        elif lr is not None:
            image = torch.nn.functional.interpolate(lr[None], scale_factor=scale)[0].clamp(0, 1)
        else:
            image = torch.zeros(3, *kernels.shape[1:])
        step_y = max(1, image.shape[1] // kernels.shape[1])
        step_x = max(1, image.shape[2] // kernels.shape[2])

        def kernel_at(y: int, x: int) -> torch.Tensor:
            row = min(y // step_y, kernels.shape[1] - 1)
            col = min(x // step_x, kernels.shape[2] - 1)
            return kernels[:, row, col].reshape(k, k)

        picture = kernel_field_picture(image, kernel_at, cells=6)
        array = (picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = out_dir / f"{stem}_kernels.png"
        with atomic_path(path) as temp:
            Image.fromarray(array).save(temp, format="PNG")
        written.append(path)
    return written


def num_classes_of(state: dict[str, torch.Tensor]) -> int | None:
    """Number of semantic classes of a (stage-3 or stage-1) checkpoint, if it says."""
    for key, value in state.items():
        if key.endswith(_CLASS_KEYS):
            return int(value.shape[0])
    return None


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _unique_stems(paths: list[Path]) -> dict[Path, str]:
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    return {p: p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix[1:]}" for p in paths}


def load_model(cfg: DictConfig, ckpt: Path) -> LoadedNetwork:
    """The network of ``ckpt`` with its weights.

    Built from the checkpoint's own record when it has one (every checkpoint svblur's
    training systems write); else from ``cfg.model.net``, with the number of classes read
    from the checkpoint.
    """

    def config_from_cfg(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        classes = num_classes_of(state)
        if classes is not None and classes != cfg.data.num_classes:
            log.info("checkpoint has %d classes; using data.num_classes=%d", classes, classes)
            with open_dict(cfg):
                cfg.data.num_classes = classes
        net_cfg = require(cfg, "model.net", "a network config (model=blind_sr, model=cmos, ...)")
        return OmegaConf.to_container(net_cfg, resolve=True)  # type: ignore[return-value]

    loaded = load_network(ckpt, fallback_config=config_from_cfg)
    if loaded.kind == "diffusion_sr" and getattr(loaded.net, "estimator", None) is None:
        raise InputError(
            f"{ckpt}: this diffusion SR was trained on ground-truth kernels and depth "
            "(model.condition=ground_truth), which a photo does not have; predict with a "
            "checkpoint trained with model.condition=svkr"
        )
    if isinstance(loaded.net, DKENet):
        raise InputError(
            f"{ckpt}: an SSR stage-1 kernel estimator (DKENet) needs a depth map as well as "
            "the photo; predict with an SVKR written by svblur.systems.assemble_svkr (give it "
            "a depth estimator that reads images) or with a stage-3 diffusion checkpoint"
        )
    if loaded.kind == "non_blind_sr":
        raise InputError(
            f"{ckpt}: a stage-2 (non-blind SR) checkpoint needs blur and semantic maps as "
            "input, which a photo does not have; predict with a stage-3 (blind SR) checkpoint, "
            "or with a stage-1 checkpoint for the maps"
        )
    return loaded


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


class DiffusionPredictor:
    """SR of one LR image by a :class:`~svblur.models.DiffusionSR` with its SVKR.

    Returns (``__call__``) CPU float32 ``sr`` ``(3, H, W)`` and ``kernels`` ``(k*k, h, w)``
    on the LR grid (the SVKR's HR field subsampled), as :func:`save_outputs` takes them.
    """

    def __init__(self, net: Any, options: dict[str, Any], device: torch.device) -> None:
        self.net = net
        self.options = options
        self.device = device
        self.used_tile_size = int(options["tile_size"])

    @torch.no_grad()
    def __call__(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        lr = lr.to(self.device)
        conditions = self.net.estimate_conditions(lr)
        sr = self.net.sample(lr, conditions["depth"], conditions["kernels"], **self.options)
        kernels = conditions["kernels"]
        step = max(1, kernels.shape[-1] // lr.shape[-1])
        return {
            "sr": sr[0].float().cpu(),
            "kernels": kernels[0, :, ::step, ::step].float().cpu(),
        }


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run blind SR over ``cfg.input`` and write the results to ``cfg.output``.

    Returns:
        Summary: ``kind`` (what the checkpoint's network computes), ``processed`` (names), ``failed`` (name -> reason), ``ignored`` (files
        without an image suffix), ``seconds``, ``tile_size`` (smallest tile size used);
        for a diffusion checkpoint also ``steps``, ``sampler``, ``seed``, ``tile_overlap``.
    """
    apply_extras(cfg)
    ckpt = Path(require(cfg, "ckpt", "a checkpoint (ckpt=PATH)"))
    inputs, ignored = find_inputs(Path(require(cfg, "input", "an image file or folder")))
    out_dir = Path(require(cfg, "output", "the output folder (output=DIR)"))
    loaded = load_model(cfg, ckpt)
    net = loaded.net
    log.info("%s: %s network %s", ckpt, loaded.kind.replace("_", " "), type(net).__name__)
    device = _device(str(cfg.get("device", "auto")))
    net.to(device)
    scale = int(net.scale)
    num_classes = num_classes_of(net.state_dict())

    def run(lr: torch.Tensor) -> dict[str, torch.Tensor]:
        out = net(lr)
        if isinstance(out, torch.Tensor):  # a plain SR network (RRDBNet, PBaSR's export)
            return {"sr": out}
        maps = {key: out[key] for key in ("sr", "blur", "seg") if key in out}
        if "kernels" in out:  # on the LR grid (a head that upscaled by nearest: subsample)
            kernels = out["kernels"]
            step = kernels.shape[-1] // lr.shape[-1]
            maps["kernels"] = kernels[..., ::step, ::step] if step > 1 else kernels
        return maps

    if loaded.kind == "diffusion_sr":
        predictor: Any = DiffusionPredictor(net, diffusion_options(cfg), device)
    else:
        predictor = TiledPredictor(
            run,
            scale=scale,
            tile_size=int(cfg.tile_size),
            overlap=int(cfg.tile_overlap),
            device=device,
            precision=str(cfg.precision),
            min_tile_size=int(cfg.min_tile_size),
            lr_keys=("kernels",),
        )
    summary: dict[str, Any] = {
        **getattr(predictor, "options", {}),
        "kind": loaded.kind,
        "processed": [],
        "failed": {},
        "ignored": [p.name for p in ignored],
        "tile_size": int(cfg.tile_size),
    }
    start = time.perf_counter()
    stems = _unique_stems(inputs)
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
                result, out_dir, stems[path], num_classes, cfg.blur_vmax, lr=lr[0], scale=scale
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
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
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
