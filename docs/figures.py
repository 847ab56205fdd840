"""Reproduce the README's pictures (``make figures``).

``docs/degradations.png``: every degradation of ``conf/degradation/`` on the same real
RGB-D image (scikit-image's ``stereo_motorcycle``), drawn as ``svblur-degrade`` does.

``docs/predict_example.png``: train, then draw the outputs.

Runs the documented commands on the built-in data set, each in its own process:

1. stage 1, CMOS (blur + semantics), the job of ``make train``:
   ``svblur-train experiment=synthetic_stage1``;
2. stage 2, a small RRDB-SFT on the ground-truth maps:
   ``svblur-train experiment=synthetic_stage2 <SMALL_SR> <STAGE2>``;
3. stage 3, blind SR with the frozen stage-1 CMOS:
   ``svblur-train experiment=synthetic_stage3 model.estimator_ckpt=S1 model.sr_ckpt=S2
   <SMALL_SR as model.net.sr.*> <STAGE3>``;

then loads the stage-3 checkpoint (:func:`svblur.checkpoints.load_network`) and draws, for test
images of the built-in data set: bicubic x4 against the SR image and the ground truth,
the predicted blur map beside the ground-truth map, and the predicted semantic map beside
the ground truth. About 25 minutes on a 2-core CPU (the stage-1 job is most of it).

Usage::

    python docs/figures.py                           # all stages, then the picture
    python docs/figures.py --stage1 S1.ckpt --stage3 S3.ckpt   # reuse runs, draw only
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from svblur.checkpoints import load_network
from svblur.data import SyntheticDefocus
from svblur.degradation import imresize
from svblur.experiments.baselines import mean_blur
from svblur.metrics import blur_psnr, psnr_y
from svblur.ops.colour import colorize_labels, colorize_scalar

REPO = Path(__file__).resolve().parents[1]

#: The small RRDB-SFT of both SR stages (the released one needs a GPU to train).
SMALL_SR = {
    "num_features": 32,
    "num_blocks": 2,
    "growth_channels": 16,
    "prior_channels": 32,
    "gia_groups": 4,
    "fuse_resolution": "lr",
}
STAGE2 = ["trainer.max_epochs=10", "model.optimizer.lr=2e-3", "model.scheduler.warmup_epochs=1"]
STAGE3 = ["trainer.max_epochs=2", "model.optimizer.lr=5e-4"]


def stage_commands(log_dir: Path) -> dict[str, list[str]]:
    """The three ``svblur-train`` commands (stage 3's checkpoints are filled in later)."""
    common = [f"paths.log_dir={log_dir}", "logger=csv", "extras.print_config=false"]
    return {
        "stage1": ["experiment=synthetic_stage1", *common],
        "stage2": [
            "experiment=synthetic_stage2",
            *(f"model.net.{k}={v}" for k, v in SMALL_SR.items()),
            *STAGE2,
            *common,
        ],
        "stage3": [
            "experiment=synthetic_stage3",
            *(f"model.net.sr.{k}={v}" for k, v in SMALL_SR.items()),
            *STAGE3,
            *common,
        ],
    }


def run_stage(name: str, overrides: list[str], log_dir: Path) -> Path:
    """Run one ``svblur-train`` job; returns its ``last.ckpt``."""
    exe = Path(sys.executable).with_name("svblur-train")
    print(f"[{name}] svblur-train {' '.join(overrides)}", flush=True)
    start = time.perf_counter()
    subprocess.run([str(exe), *overrides], check=True, cwd=REPO)
    task = overrides[0].removeprefix("experiment=")
    runs = sorted((log_dir / task / "runs").glob("*/checkpoints/last.ckpt"))
    print(f"[{name}] done in {time.perf_counter() - start:.0f} s: {runs[-1]}", flush=True)
    return runs[-1]


def _panel(image: torch.Tensor, title: str, zoom: int) -> Image.Image:
    """A ``(3, H, W)`` image in ``[0, 1]``, enlarged ``zoom`` times, with a title above."""
    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array).resize(
        (array.shape[1] * zoom, array.shape[0] * zoom), Image.Resampling.NEAREST
    )
    canvas = Image.new("RGB", (picture.width, picture.height + 16), "white")
    canvas.paste(picture, (0, 16))
    ImageDraw.Draw(canvas).text((2, 2), title, fill=(0, 0, 0))
    return canvas


def draw(stage3: Path, out: Path, indices: list[int], zoom: int = 2) -> list[dict[str, float]]:
    """Draw the picture from a stage-3 checkpoint; returns per-image PSNR-Y figures."""
    loaded = load_network(stage3)
    net = loaded.net
    classes = int(loaded.config["estimator"]["num_classes"])
    data, sigma = _test_split(classes)
    rows, figures = [], []
    for index in indices:
        sample = data[index]
        lr, hr = sample["lr"][None], sample["hr"][None]
        with torch.no_grad():
            pred = net(lr)
        sr = pred["sr"].clamp(0, 1)
        bicubic = imresize(lr, 4.0).clamp(0, 1)
        psnr = {"bicubic": float(psnr_y(bicubic, hr)[0]), "sr": float(psnr_y(sr, hr)[0])}
        target = sample["blur"][None]
        psnr["blur"] = float(blur_psnr(pred["blur"], target)[0])
        psnr["blur_constant"] = float(blur_psnr(torch.full_like(target, sigma), target)[0])
        figures.append({"index": index, **psnr})
        vmax = max(1.0, float(sample["blur"].max()))
        blur_gt = colorize_scalar(sample["blur"][None], vmax)[0]
        blur_pred = colorize_scalar(pred["blur"].clamp(min=0), vmax)[0]
        seg_gt = colorize_labels(sample["seg"][None], classes)[0]
        seg_pred = colorize_labels(pred["seg"].argmax(1), classes)[0]
        panels = [
            (bicubic[0], f"bicubic x4, {psnr['bicubic']:.2f} dB"),
            (sr[0], f"blind SR x4, {psnr['sr']:.2f} dB"),
            (hr[0], "HR ground truth"),
            (blur_gt, f"GT blur sigma (0-{vmax:.1f} px)"),
            (blur_pred, f"predicted, {psnr['blur']:.1f} dB (const. {psnr['blur_constant']:.1f})"),
            (seg_gt, "GT semantics"),
            (seg_pred, "predicted semantics"),
        ]
        row = [_panel(image, title, zoom) for image, title in panels]
        rows.append(row)
    _sheet(rows, out)
    return figures


def _test_split(classes: int) -> tuple[SyntheticDefocus, float]:
    """The test split of ``make train``'s data (``conf/data/synthetic.yaml``) and the
    training split's mean sigma (the constant baseline)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from svblur.conf import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = compose("train", overrides=[f"data.num_classes={classes}"])
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule.datasets["test"], mean_blur(datamodule.train_dataloader())


DEGRADATIONS = (
    "defocus",
    "gaussian_sv",
    "motion_sv",
    "partial_blur",
    "bsrgan",
    "realesrgan",
)


def _text_panel(lines: list[str], size: tuple[int, int], title: str) -> Image.Image:
    """A white panel of ``size`` (width, height) with a title and lines of text."""
    canvas = Image.new("RGB", (size[0], size[1] + 16), "white")
    ink = ImageDraw.Draw(canvas)
    ink.text((2, 2), title, fill=(0, 0, 0))
    for row, line in enumerate(lines):
        ink.text((6, 22 + 13 * row), line, fill=(0, 0, 0))
    return canvas


def _bsrgan_lines(plan: Any) -> list[str]:
    """One line per step of a :class:`~svblur.degradation.BSRGANPlan`, in order."""
    lines = [] if plan.prescale is None else [f"2x pre-downsample ({plan.prescale})"]
    for name in plan.order:
        step = plan.steps[name]
        if name.startswith("blur") and step["kind"] == "iso":
            lines.append(f"{name}: iso {step['size']}x{step['size']}, sigma {step['sigma']:.2f}")
        elif name.startswith("blur"):
            sigmas = "/".join(f"{v**0.5:.2f}" for v in step["variances"])
            lines.append(f"{name}: aniso {step['size']}x{step['size']}, sigma {sigmas}")
        elif name == "downsample" and step["kind"] == "resize":
            lines.append(f"downsample: 1/{step['factor']:.2f} ({step['mode']})")
        elif name == "downsample":
            lines.append(f"downsample: shifted Gaussian {step['sigma']:.2f} + nearest")
        elif name == "resize":
            lines.append(f"resize to the LR size ({step['mode']})")
        elif name == "noise":
            lines.append(f"noise: {step['kind']} Gaussian, level {step['level']}")
        elif name == "jpeg":
            lines.append(
                "jpeg: skipped" if step["quality"] is None else f"jpeg: q {step['quality']}"
            )
    return [*lines, f"final jpeg: q {plan.final_jpeg}"]


def draw_degradations(out: Path, seed: int = 0) -> None:
    """Every degradation on the real ``stereo_motorcycle`` image: LR (x4, nearest), the
    kernel field over the image, and the map it gives (sigma, or the blur mask). The LR
    models with their own blurs (``bsrgan``, ``realesrgan``) give no map: their rows list
    the drawn steps instead."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from skimage import data as skdata

    from svblur.conf import config_dir
    from svblur.degradation import BSRGANDegradation, SceneInput, fill_invalid_depth
    from svblur.inference.degrading import gaussians_of as _gaussians_of
    from svblur.ops.pictures import kernel_field_picture

    left, _, disparity = skdata.stereo_motorcycle()
    # The Middlebury calibration of this pair: depth (mm) = baseline * f / (d + doffs)
    depth = 193.001 * 3979.911 / (disparity.astype(np.float64) + 124.343)
    depth[~np.isfinite(disparity)] = 0
    image = imresize(left.astype(np.float32) / 255, 0.4).clip(0, 1)[:196, :296]
    rows_idx = (np.arange(196) / 0.4).astype(int)
    cols_idx = (np.arange(296) / 0.4).astype(int)
    depth = np.asarray(fill_invalid_depth(depth), np.float64)[rows_idx][:, cols_idx]
    scene = SceneInput(np.ascontiguousarray(image, np.float32), depth)
    hr = torch.from_numpy(np.ascontiguousarray(scene.image.transpose(2, 0, 1)))
    rows = []
    for name in DEGRADATIONS:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
            cfg = compose("degrade", overrides=[f"degradation={name}", "input=x", "output=x"])
        GlobalHydra.instance().clear()
        pipeline = instantiate(cfg.degradation, _convert_="all")
        rng = np.random.default_rng([seed, DEGRADATIONS.index(name)])
        degraded = pipeline.degrade(scene, rng, max_coc=15.0)
        if isinstance(pipeline.downsample, BSRGANDegradation):
            plan = pipeline.downsample.draw(rng)
            lr_image = pipeline.downsample.apply(degraded.image, plan, rng)
        else:
            lr_image = pipeline.to_lr(degraded.image, rng)
        lr = torch.from_numpy(np.ascontiguousarray(lr_image.transpose(2, 0, 1)))
        lr_up = torch.nn.functional.interpolate(lr[None], scale_factor=4, mode="nearest")[0]
        maps = degraded.maps
        if not maps:
            size = (hr.shape[2], hr.shape[1])
            if isinstance(pipeline.downsample, BSRGANDegradation):
                lines, title = _bsrgan_lines(plan), "BSRGAN: the drawn steps, in order"
            else:
                lines = [
                    "stage 1: blur, random resize, noise, JPEG",
                    "stage 2: blur (p 0.8), random resize, noise,",
                    "  resize to the LR size + sinc and JPEG",
                    "  in a random order",
                ]
                title = "Real-ESRGAN: second order"
            rows.append(
                [
                    _panel(lr_up.clamp(0, 1), f"{name}: LR x4 (nearest)", 1),
                    _text_panel(lines, size, title),
                    _text_panel(["its own Gaussian-family blurs:", "no per-pixel map"], size, ""),
                ]
            )
            continue
        if "kernels" in maps:
            field = kernel_field_picture(hr, torch.from_numpy(maps["kernels"]), 4)
        else:
            field = kernel_field_picture(hr, _gaussians_of(maps["blur"]), 4)
        if "blur_mask" in maps:
            extra = torch.from_numpy(maps["blur_mask"])[None].expand(3, -1, -1)
            extra_title = "blur mask (white = blurred)"
        elif "blur" in maps:
            extra = colorize_scalar(torch.from_numpy(maps["blur"])[None, None], 4.0)[0]
            extra_title = "sigma map (0-4 px)"
        else:
            extra = torch.ones(3, *hr.shape[1:])
            extra_title = "(kernels only)"
        rows.append(
            [
                _panel(lr_up.clamp(0, 1), f"{name}: LR x4 (nearest)", 1),
                _panel(field, "kernel field", 1),
                _panel(extra, extra_title, 1),
            ]
        )
    _sheet(rows, out)


def _sheet(rows: list[list[Image.Image]], out: Path) -> None:
    width = sum(p.width for p in rows[0]) + 4 * (len(rows[0]) - 1)
    height = sum(r[0].height for r in rows) + 4 * (len(rows) - 1)
    sheet = Image.new("RGB", (width, height), "white")
    y = 0
    for row in rows:
        x = 0
        for panel in row:
            sheet.paste(panel, (x, y))
            x += panel.width + 4
        y += row[0].height + 4
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage1", type=Path, help="reuse a stage-1 checkpoint (make train's)")
    parser.add_argument("--stage3", type=Path, help="reuse a stage-3 checkpoint: draw only")
    parser.add_argument("--log-dir", type=Path, default=REPO / "logs" / "figures")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "predict_example.png")
    parser.add_argument("--images", type=int, nargs="+", default=[4, 1, 3])
    parser.add_argument(
        "--degradations-only", action="store_true", help="draw docs/degradations.png only"
    )
    args = parser.parse_args(argv)
    degradations = args.out.with_name("degradations.png")
    draw_degradations(degradations)
    print(f"wrote {degradations}")
    if args.degradations_only:
        return 0

    commands = stage_commands(args.log_dir)
    stage3 = args.stage3
    if stage3 is None:
        stage1 = args.stage1 or run_stage("stage1", commands["stage1"], args.log_dir)
        stage2 = run_stage("stage2", commands["stage2"], args.log_dir)
        overrides = commands["stage3"]
        overrides[1:1] = [f"model.estimator_ckpt={stage1}", f"model.sr_ckpt={stage2}"]
        stage3 = run_stage("stage3", overrides, args.log_dir)
    figures = draw(stage3, args.out, args.images)
    for row in figures:
        print(
            f"test image {row['index']}: PSNR-Y bicubic {row['bicubic']:.2f} dB, "
            f"blind SR {row['sr']:.2f} dB; blur PSNR {row['blur']:.2f} dB, constant "
            f"{row['blur_constant']:.2f} dB"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
